//! A transaction on one pooled connection, sent in flights: the
//! statements of one flight go out back to back (tokio-postgres pipelines
//! requests whose futures are polled together) and their answers come
//! back in one round trip, so a transition costs two or three round trips
//! whatever its number of statements.
//!
//! A transaction that is dropped before it ended (an error, a cancelled
//! caller) takes its connection with it: the server rolls back when the
//! connection closes, and no connection returns to the pool mid-transaction.

use crate::redact::Redactor;
use deadpool_postgres::Object;
use futures::future::BoxFuture;
use switchyard_store::StoreError;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

pub(crate) struct Tx {
    c: Option<Object>,
}

impl Tx {
    /// A connection for a transaction; `BEGIN` goes out with the first
    /// flight ([`Tx::begin_with`]).
    pub(crate) fn new(c: Object) -> Tx {
        Tx { c: Some(c) }
    }

    pub(crate) fn c(&self) -> Result<&Client, StoreError> {
        self.c.as_ref().map(|o| &***o).ok_or(StoreError::Closed)
    }

    /// Prepares (or finds in the connection's cache) every statement
    /// before a flight: a first-time prepare is a round trip of its own
    /// and would break the order of a pipelined flight.
    pub(crate) async fn prepare(&self, sql: &[&str]) -> Result<Vec<Statement>, TxError> {
        let c = self.c.as_ref().ok_or(StoreError::Closed)?;
        Ok(prepare(c, sql).await?)
    }

    /// Ends the transaction with `ROLLBACK` and gives the connection back.
    pub(crate) async fn rollback(mut self) -> Result<(), TxError> {
        let c = self.c.take().ok_or(StoreError::Closed)?;
        match c.batch_execute("ROLLBACK").await {
            Ok(()) => Ok(()),
            Err(e) => {
                drop(Object::take(c));
                Err(TxError::Db(e))
            }
        }
    }

    /// The transaction ended (its `COMMIT` went out with the last flight
    /// and succeeded): the connection goes back to the pool.
    pub(crate) fn finished(mut self) {
        self.c.take();
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if let Some(c) = self.c.take() {
            // Closing the connection ends the transaction on the server.
            drop(Object::take(c));
        }
    }
}

pub(crate) async fn prepare(
    c: &deadpool_postgres::ClientWrapper,
    sql: &[&str],
) -> Result<Vec<Statement>, tokio_postgres::Error> {
    futures::future::try_join_all(sql.iter().map(|s| c.prepare_cached(s))).await
}

/// Why a transaction failed, before it becomes a [`StoreError`]: a
/// database error is kept as such until the retry loop has looked at it.
pub(crate) enum TxError {
    Db(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        TxError::Db(e)
    }
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        TxError::Store(e)
    }
}

impl TxError {
    /// Lost a race that trying again can win: a deadlock the server broke
    /// (rows locked in different orders by two transactions), or a
    /// serialization failure.
    pub(crate) fn retryable(&self) -> bool {
        use tokio_postgres::error::SqlState;
        matches!(self, TxError::Db(e) if e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
            || e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE))
    }

    pub(crate) fn into_store(self, redact: &Redactor) -> StoreError {
        match self {
            TxError::Db(e) => redact.db(e),
            TxError::Store(e) => e,
        }
    }
}

/// How many times a transaction that lost a race is tried in all.
pub(crate) const TRIES: usize = 5;

/// What one statement of a flight returned.
pub(crate) enum Out {
    Done,
    Rows(Vec<Row>),
}

impl Out {
    pub(crate) fn rows(&mut self) -> Vec<Row> {
        match std::mem::replace(self, Out::Done) {
            Out::Rows(r) => r,
            _ => Vec::new(),
        }
    }
}

pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Statements sent back to back, answered in one round trip. Each future
/// sends its request when first polled, and `try_join_all` polls them in
/// the order they were added, so the server runs them in that order.
#[derive(Default)]
pub(crate) struct Flight<'a> {
    futs: Vec<BoxFuture<'a, Result<Out, tokio_postgres::Error>>>,
}

impl<'a> Flight<'a> {
    /// A statement without parameters or prepared form (BEGIN, COMMIT).
    pub(crate) fn simple(&mut self, c: &'a Client, sql: &'static str) -> usize {
        self.futs.push(Box::pin(async move {
            c.batch_execute(sql).await?;
            Ok(Out::Done)
        }));
        self.futs.len() - 1
    }

    pub(crate) fn query(&mut self, c: &'a Client, st: &'a Statement, p: Params<'a>) -> usize {
        self.futs.push(Box::pin(
            async move { Ok(Out::Rows(c.query(st, p).await?)) },
        ));
        self.futs.len() - 1
    }

    pub(crate) fn execute(&mut self, c: &'a Client, st: &'a Statement, p: Params<'a>) -> usize {
        self.futs.push(Box::pin(async move {
            c.execute(st, p).await?;
            Ok(Out::Done)
        }));
        self.futs.len() - 1
    }

    pub(crate) async fn run(self) -> Result<Vec<Out>, tokio_postgres::Error> {
        futures::future::try_join_all(self.futs).await
    }
}
