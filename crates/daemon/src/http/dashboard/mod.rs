//! The web dashboard on `daemon.listen`: `GET /` and `GET /job/{key}` (page
//! shells, no data), `/assets/*` (inside the binary: no outside request),
//! HTML fragments under `/ui/*` that the page swaps in, and the JSON calls
//! it makes, which scripts may use too: `GET /v1/events` (server-sent
//! events), `GET|POST /v1/bulk/{action}`, `POST /v1/batches`,
//! `POST|DELETE /v1/session`, `GET /v1/jobs/{key}/outputs/{n}`, and the
//! paged `GET /v1/jobs`.
//!
//! Everything but the shells and assets sits behind the token like the rest
//! of the API (a header, or the session cookie `POST /v1/session` sets),
//! and behind the same guards against other sites' pages (`guard.rs`).

mod pages;

use super::auth::{cookie_name, Auth};
use super::errors::ApiError;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::Stream;
use maud::Markup;
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use switchyard_api::{BatchUpload, BulkAction, BulkFilter, BulkPreview, BulkRequest};
use switchyard_core::JobState;
use switchyard_engine::events::ChangeBatch;
use switchyard_engine::paging::{JobQuery, SortKey};
use switchyard_engine::Engine;
use tower::ServiceExt;

/// Rows per page of the dashboard's table.
const PAGE_ROWS: usize = 50;

/// Most rows one `GET /v1/jobs?limit=` answer carries.
const MAX_LIMIT: usize = 1000;

/// Keep-alive comments on an idle event stream (proxies drop silent ones).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The page's script modules and stylesheet, built into the binary.
const ASSETS: [(&str, &str, &str); 5] = [
    ("app.js", JS, include_str!("assets/app.js")),
    ("api.js", JS, include_str!("assets/api.js")),
    ("actions.js", JS, include_str!("assets/actions.js")),
    ("upload.js", JS, include_str!("assets/upload.js")),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("assets/app.css"),
    ),
];
const JS: &str = "text/javascript; charset=utf-8";

/// What the page may load and where it may send: only this daemon, except
/// videos and their posters at the provider when none was downloaded.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: https: http:; media-src 'self' https: http:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub(super) fn routes(auth: Arc<Auth>) -> Router<Engine> {
    let session = {
        let auth = auth.clone();
        move |headers: HeaderMap, body: axum::body::Bytes| {
            let auth = auth.clone();
            async move { start_session(&auth, &headers, &body) }
        }
    };
    Router::new()
        .route("/", get(index))
        .route("/job/{key}", get(job_shell))
        .route("/assets/{name}", get(asset))
        .route("/ui/overview", get(ui_overview))
        .route("/ui/filters", get(ui_filters))
        .route("/ui/jobs", get(ui_jobs))
        .route("/ui/job/{key}", get(ui_job))
        .route("/ui/rows", get(ui_rows))
        .route("/v1/events", get(events))
        .route("/v1/bulk/{action}", get(bulk_preview).post(bulk_run))
        .route("/v1/batches", axum::routing::post(upload))
        .route(
            "/v1/session",
            axum::routing::post(session).delete(end_session),
        )
        .route("/v1/jobs/{key}/outputs/{n}", get(output_file))
}

/// Headers every page and fragment carries: no framing by other sites, no
/// content sniffing, nothing loaded from elsewhere but media.
fn page(markup: Markup) -> Response {
    let mut r = Html(markup.into_string()).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("same-origin"),
    );
    r
}

async fn index() -> Response {
    page(pages::shell("index", None))
}

async fn job_shell(Path(key): Path<String>) -> Response {
    page(pages::shell("job", Some(&key)))
}

async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    let Some(&(_, kind, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return Err(ApiError::new(
            404,
            "not_found",
            format!("no asset {name:?}"),
        ));
    };
    Ok((
        [
            (header::CONTENT_TYPE, kind),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // Assets change with the binary; a restart is rare and a
            // reload fetches them again.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}

/// The jobs table's query string, as forms and scripts send it: empty
/// values mean "any".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JobsParams {
    state: Option<String>,
    provider: Option<String>,
    q: Option<String>,
    sort: Option<String>,
    dir: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

fn some(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl JobsParams {
    pub(super) fn query(&self) -> Result<JobQuery, ApiError> {
        let bad = |m: String| ApiError::new(400, "bad_request", m);
        let state = some(&self.state)
            .map(|s| s.parse::<JobState>())
            .transpose()
            .map_err(bad)?;
        let sort = some(&self.sort)
            .map(|s| s.parse::<SortKey>())
            .transpose()
            .map_err(bad)?
            .unwrap_or_default();
        let descending = match some(&self.dir) {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(other) => {
                return Err(bad(format!("unknown dir {other:?} (expected asc or desc)")))
            }
        };
        Ok(JobQuery {
            state,
            provider: some(&self.provider).map(String::from),
            search: some(&self.q).map(String::from),
            sort,
            descending,
            offset: self.offset.unwrap_or(0),
            limit: self.limit,
        })
    }

    /// True when the caller asked for anything beyond the original
    /// `state`/`provider` listing.
    fn paged(&self) -> bool {
        self.q.is_some()
            || self.sort.is_some()
            || self.dir.is_some()
            || self.offset.is_some()
            || self.limit.is_some()
    }
}

/// `GET /v1/jobs`: every matching job as before; with `q`, `sort`, `dir`,
/// `offset` or `limit`, that page of them (at most 1,000), and the number
/// matching in all in `X-Total-Count`.
pub(super) async fn list_jobs(
    State(rt): State<Engine>,
    Query(p): Query<JobsParams>,
) -> Result<Response, ApiError> {
    let mut q = p.query()?;
    if p.paged() {
        q.limit = Some(q.limit.unwrap_or(MAX_LIMIT).min(MAX_LIMIT));
    }
    let page = rt.jobs_page(&q).await?;
    let mut r = Json(page.jobs).into_response();
    if p.paged() {
        r.headers_mut()
            .insert("x-total-count", HeaderValue::from(page.total as u64));
    }
    Ok(r)
}

async fn ui_overview(State(rt): State<Engine>) -> Result<Response, ApiError> {
    let views = rt.providers().await?;
    let counts = rt.counts().await?;
    let cards: Vec<pages::ProviderCard<'_>> = views
        .iter()
        .map(|v| pages::ProviderCard {
            view: v,
            counts: pages::counts_for(&counts, &v.name),
            rate_in_use: rt.rate_in_use(&v.name),
            rate_sent: rt.rate_sent(&v.name),
        })
        .collect();
    Ok(page(pages::overview(&cards)))
}

async fn ui_filters(
    State(rt): State<Engine>,
    Query(p): Query<JobsParams>,
) -> Result<Response, ApiError> {
    let q = p.query()?;
    Ok(page(pages::filters(&rt.provider_names(), &q)))
}

async fn ui_jobs(
    State(rt): State<Engine>,
    Query(p): Query<JobsParams>,
) -> Result<Response, ApiError> {
    let mut q = p.query()?;
    let limit = q.limit.unwrap_or(PAGE_ROWS).clamp(1, MAX_LIMIT);
    q.limit = Some(limit);
    let page_ = rt.jobs_page(&q).await?;
    Ok(page(pages::jobs(&page_.jobs, page_.total, &q, limit)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RowsParams {
    /// A JSON array of job keys (any text survives it).
    keys: String,
}

/// `GET /ui/rows?keys=["a","b"]`: those jobs' rows, for an event's keys.
async fn ui_rows(
    State(rt): State<Engine>,
    Query(p): Query<RowsParams>,
) -> Result<Response, ApiError> {
    let keys: Vec<String> = serde_json::from_str(&p.keys).map_err(|e| {
        ApiError::new(
            400,
            "bad_request",
            format!("keys: not a JSON array of strings: {e}"),
        )
    })?;
    if keys.len() > switchyard_engine::events::MAX_KEYS {
        return Err(ApiError::new(
            400,
            "bad_request",
            format!("at most {} keys", switchyard_engine::events::MAX_KEYS),
        ));
    }
    let jobs = rt.jobs_by_key(&keys).await?;
    Ok(page(pages::rows(&jobs)))
}

async fn ui_job(State(rt): State<Engine>, Path(key): Path<String>) -> Result<Response, ApiError> {
    let d = rt.job(&key).await?;
    let outputs = rt.outputs(&key).await?;
    Ok(page(pages::job(&d, &outputs)))
}

/// `GET /v1/events`: `jobs` events (`{"keys": [...]}`: these jobs and
/// their providers' figures changed) and `resync` events (look again at
/// everything), at most one per 250 ms; a comment every 15 s keeps an idle
/// stream open. Nothing runs between changes.
async fn events(State(rt): State<Engine>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures::stream::unfold(rt.changes(), |mut changes| async move {
        let batch = changes.next().await?;
        let event = match batch {
            ChangeBatch::Jobs { keys } => Event::default()
                .event("jobs")
                .json_data(serde_json::json!({ "keys": keys }))
                .unwrap_or_else(|_| Event::default().event("resync").data("{}")),
            ChangeBatch::Resync => Event::default().event("resync").data("{}"),
        };
        Some((Ok(event), changes))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterParams {
    state: Option<String>,
    provider: Option<String>,
    q: Option<String>,
}

fn bulk_query(f: &BulkFilter) -> JobQuery {
    JobQuery {
        state: f.state,
        provider: f.provider.clone().filter(|p| !p.trim().is_empty()),
        search: f.q.clone().filter(|q| !q.trim().is_empty()),
        ..JobQuery::default()
    }
}

fn action_of(s: &str) -> Result<BulkAction, ApiError> {
    s.parse()
        .map_err(|m: String| ApiError::new(404, "not_found", m))
}

/// `GET /v1/bulk/{action}?state=&provider=&q=`: how many jobs the action
/// would touch.
async fn bulk_preview(
    State(rt): State<Engine>,
    Path(action): Path<String>,
    Query(f): Query<FilterParams>,
) -> Result<Json<BulkPreview>, ApiError> {
    let action = action_of(&action)?;
    let p = JobsParams {
        state: f.state,
        provider: f.provider,
        q: f.q,
        ..JobsParams::default()
    };
    let q = p.query()?;
    let count = rt.bulk_count(action, &q).await?;
    Ok(Json(BulkPreview { action, count }))
}

/// `POST /v1/bulk/{action}` with the filter and the confirmed count.
async fn bulk_run(
    State(rt): State<Engine>,
    Path(action): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let action = action_of(&action)?;
    let req: BulkRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            400,
            "bad_request",
            format!(
                "body is not a bulk request ({{\"state\", \"provider\", \"q\", \"count\"}}): {e}"
            ),
        )
    })?;
    let answer = rt.bulk(action, &bulk_query(&req.filter), req.count).await?;
    Ok(Json(answer).into_response())
}

/// `POST /v1/batches`: a batch file's bytes, checked and queued whole.
async fn upload(State(rt): State<Engine>, body: axum::body::Bytes) -> Response {
    let up: BatchUpload = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => {
            return ApiError::new(
                400,
                "bad_request",
                format!("body is not an upload ({{\"name\", \"text\" or \"base64\"}}): {e}"),
            )
            .into_response()
        }
    };
    let bytes = match (up.text, up.base64) {
        (Some(t), None) => t.into_bytes(),
        (None, Some(b)) => {
            use base64::Engine as _;
            match base64::engine::general_purpose::STANDARD.decode(b.trim()) {
                Ok(b) => b,
                Err(e) => {
                    return ApiError::new(400, "bad_request", format!("base64: {e}"))
                        .into_response()
                }
            }
        }
        _ => {
            return ApiError::new(
                400,
                "bad_request",
                "an upload carries exactly one of \"text\" and \"base64\"",
            )
            .into_response()
        }
    };
    let name = if up.name.trim().is_empty() {
        "upload.toml".to_string()
    } else {
        up.name
    };
    match rt.intake_file(&name, &bytes).await {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => super::errors::batch_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionBody {
    token: String,
}

/// `POST /v1/session` `{"token"}`: a session cookie for this browser when
/// the token is right (401 when not); `{"auth": false}` when the daemon
/// needs no token.
fn start_session(auth: &Auth, headers: &HeaderMap, body: &[u8]) -> Response {
    if !auth.enabled() {
        return Json(serde_json::json!({ "auth": false })).into_response();
    }
    let given: SessionBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            return ApiError::new(
                400,
                "bad_request",
                format!("body is not {{\"token\": \"...\"}}: {e}"),
            )
            .into_response()
        }
    };
    match auth.session_for(given.token.trim()) {
        Some(value) => {
            // No `Secure`: the daemon speaks plain HTTP (loopback, or an
            // SSH tunnel to it); HttpOnly and SameSite=Strict hold either way.
            let name = cookie_name(headers.get(header::HOST));
            let cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
            let mut r = Json(serde_json::json!({ "auth": true })).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        None => ApiError::new(401, "unauthorized", "wrong token").into_response(),
    }
}

/// `DELETE /v1/session`: forgets this browser's session cookie.
async fn end_session(headers: HeaderMap) -> Response {
    let name = cookie_name(headers.get(header::HOST));
    let cookie = format!("{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    let mut r = Json(serde_json::json!({ "auth": false })).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `GET /v1/jobs/{key}/outputs/{n}`: the downloaded copy of output `n`
/// (Range requests answered, so a `<video>` seeks). Only a file the job
/// records, resolved inside `output_dir`, is ever served; as a video,
/// image or download, never as a page of this origin.
async fn output_file(
    State(rt): State<Engine>,
    Path((key, n)): Path<(String, usize)>,
    req: Request,
) -> Result<Response, ApiError> {
    let outputs = rt.outputs(&key).await?;
    let Some(file) = outputs.get(n).and_then(|o| o.file.clone()) else {
        return Err(ApiError::new(
            404,
            "not_found",
            format!("job {key:?} has no downloaded output {n}"),
        ));
    };
    let media = media_type(&file);
    let download = media == mime::APPLICATION_OCTET_STREAM;
    let resp = tower_http::services::ServeFile::new_with_mime(&file, &media)
        .oneshot(req)
        .await
        .map_err(|e: Infallible| ApiError::new(500, "internal", e.to_string()))?;
    let (mut parts, body) = resp.into_parts();
    let h = &mut parts.headers;
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    if download {
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// Videos and still images by their extension, as what they are; anything
/// else (a provider that sent a page, an SVG that could carry script) as a
/// download.
fn media_type(file: &std::path::Path) -> mime::Mime {
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let known = match ext.as_deref() {
        Some("mp4" | "m4v") => "video/mp4",
        Some("webm") => "video/webm",
        Some("mov") => "video/quicktime",
        Some("ogv") => "video/ogg",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        _ => "application/octet-stream",
    };
    known.parse().unwrap_or(mime::APPLICATION_OCTET_STREAM)
}
