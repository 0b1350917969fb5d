//! [`Store`] for [`SledStore`]: each method a thin call into the write
//! path and reads of `lib.rs`, the gate (`gate.rs`) or the leases
//! (`leases.rs`).

use super::*;

#[async_trait]
impl Store for SledStore {
    async fn intake(&self, specs: Vec<JobSpec>) -> Result<IntakeReport, StoreError> {
        self.intake_now(specs)
    }

    async fn get(&self, key: &str) -> Result<Option<Job>, StoreError> {
        self.get_now(key)
    }

    async fn history(&self, key: &str) -> Result<Vec<Transition>, StoreError> {
        let jk = job_key(key);
        Ok(match self.read_unlocked(&jk)? {
            Some(v) => decode_record(&jk, &v)?.history,
            None => Vec::new(),
        })
    }

    async fn list(&self, filter: &Filter) -> Result<Vec<Job>, StoreError> {
        // A full listing reads every record: off the runtime's threads.
        let (store, filter) = (self.clone(), filter.clone());
        tokio::task::spawn_blocking(move || store.list_now(&filter))
            .await
            .map_err(|e| StoreError::Storage(format!("listing task: {e}")))?
    }

    async fn counts(&self) -> Result<Vec<StateCount>, StoreError> {
        let p = lock(&self.pending);
        let mut out = Vec::new();
        for (provider, row) in &p.counts.by_provider {
            for state in JobState::ALL {
                out.push(StateCount {
                    provider: provider.clone(),
                    state,
                    jobs: row[state.code() as usize],
                });
            }
        }
        Ok(out)
    }

    async fn claim(&self, c: Claim<'_>) -> Result<Claimed, StoreError> {
        let no_gate = Gate {
            interval: Duration::from_micros(1),
            burst: u32::MAX,
        };
        let gated = c.gate.is_some();
        self.gates
            .with(c.provider, c.gate.unwrap_or(no_gate), |turn| {
                self.claim_now(&c, gated.then_some(turn))
            })
    }

    async fn apply(&self, key: &str, expect: JobState, change: Change) -> Result<Job, StoreError> {
        self.apply_now(key, expect, &change)
    }

    async fn apply_owned(
        &self,
        _lease: &Lease,
        key: &str,
        expect: JobState,
        change: Change,
    ) -> Result<Job, StoreError> {
        // One process holds every job of a sled store.
        self.apply_now(key, expect, &change)
    }

    async fn ledger(&self, provider: &str, period: &str) -> Result<LedgerEntry, StoreError> {
        let p = lock(&self.pending);
        self.ledger_get(&p, &ledger_key(provider, period))
    }

    async fn renew(&self, owner: &Owner, ttl: Duration) -> Result<Lease, StoreError> {
        Ok(self.leases.renew(owner, ttl))
    }

    async fn daemons(&self) -> Result<Vec<DaemonInfo>, StoreError> {
        Ok(self.leases.live())
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.leases.release(lease);
        Ok(())
    }

    async fn recover(&self, _lease: &Lease) -> Result<Vec<Job>, StoreError> {
        let mut out = Vec::new();
        for state in [
            JobState::Submitting,
            JobState::Pending,
            JobState::Processing,
        ] {
            out.extend(self.list_now(&Filter {
                state: Some(state),
                provider: None,
            })?);
        }
        Ok(out)
    }

    async fn rescue(&self, _lease: &Lease) -> Result<Vec<Job>, StoreError> {
        Ok(Vec::new())
    }

    async fn permit(&self, provider: &str, gate: Gate) -> Result<Permit, StoreError> {
        Ok(self.gates.with(provider, gate, |turn| match turn.peek() {
            Ok(next) => {
                turn.commit(next);
                Permit::Granted
            }
            Err(wait) => Permit::Wait(wait),
        }))
    }

    async fn hold(&self, provider: &str, wait: Duration) -> Result<(), StoreError> {
        if let Some((k, v)) = self.gates.hold(provider, wait) {
            lock(&self.pending).put(k, v);
            self.sync().await?;
        }
        Ok(())
    }

    async fn held(&self, provider: &str) -> Result<Option<Duration>, StoreError> {
        Ok(self.gates.held(provider))
    }

    async fn set_paused(&self, provider: &str, paused: bool) -> Result<(), StoreError> {
        if self.gates.set_paused(provider, paused) {
            let k = gate::prefixed(record::P_PAUSE, provider);
            {
                let mut p = lock(&self.pending);
                if paused {
                    p.put(k, IVec::from(&[1u8]));
                } else {
                    p.del(k);
                }
            }
            self.sync().await?;
        }
        Ok(())
    }

    async fn paused(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.gates.paused())
    }

    async fn hint(&self, _hint: Hint) -> Result<(), StoreError> {
        // No other daemon shares a sled store.
        Ok(())
    }

    fn hints(&self) -> Option<tokio::sync::broadcast::Receiver<Hint>> {
        None
    }

    async fn load_stats(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        // Under the staging lock: a record leaves `writing` only once sled
        // has it, so the tree, then what is being written, then what is
        // staged give the latest value of each key.
        let p = lock(&self.pending);
        let mut out = std::collections::BTreeMap::new();
        for kv in self.tree.scan_prefix([P_STATS]) {
            let (k, v) = kv.map_err(storage)?;
            out.insert(k.to_vec(), Some(v));
        }
        for staged in p.writing.iter().map(|w| &**w).chain([&p.overlay]) {
            for (k, v) in staged.iter().filter(|(k, _)| k.first() == Some(&P_STATS)) {
                out.insert(k.clone(), v.clone());
            }
        }
        Ok(out
            .into_iter()
            .filter_map(|(k, v)| {
                let key = String::from_utf8(k.get(1..)?.to_vec()).ok()?;
                Some((key, v?.to_vec()))
            })
            .collect())
    }

    async fn save_stats(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        lock(&self.pending).put(stats_key(key), bytes);
        Ok(())
    }

    async fn sync(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.flusher
            .send(Waiter {
                store: self.clone(),
                done: tx,
            })
            .map_err(|_| StoreError::Closed)?;
        rx.await
            .map_err(|_| StoreError::Closed)?
            .map_err(StoreError::Storage)
    }
}
