//! The Batch API, passed through to a provider that serves it (Groq, OpenAI, Together): which
//! call a path names, the upload rewritten on its way (the route names in its JSONL lines
//! become the provider's model ids, line by line, without holding the file), and what the
//! router remembers of each file and batch: which provider and key made it, and for whom.
//!
//! A batch's work never runs through the attempt loop: the provider runs it within its window,
//! at its batch price and on its batch limits, so the quota ledger and failover do not apply.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::config::{Config, Key, Provider, Secret};
use super::error::RouterError;
use super::outcome::{self, Outcome};
use super::request::{object_text, RawObject};

/// A call of the Batch API, with the id its path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call<'p> {
    /// `POST /v1/files`: a JSONL of requests, `purpose=batch`.
    Upload,
    /// `POST /v1/batches`.
    Create,
    /// `GET /v1/batches/{id}`.
    Batch(&'p str),
    /// `POST /v1/batches/{id}/cancel`.
    Cancel(&'p str),
    /// `GET /v1/files/{id}`.
    File(&'p str),
    /// `GET /v1/files/{id}/content`: an input, output or error file, streamed.
    Content(&'p str),
}

/// What the router remembers of a file or a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Batch,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Batch => "batch",
        }
    }
}

impl Call<'_> {
    /// The file or batch the call names, if any.
    pub fn object(&self) -> Option<(Kind, &str)> {
        match self {
            Call::Upload | Call::Create => None,
            Call::Batch(id) | Call::Cancel(id) => Some((Kind::Batch, id)),
            Call::File(id) | Call::Content(id) => Some((Kind::File, id)),
        }
    }

    /// The provider's path for the call (under its base URL) and its method.
    pub fn upstream(&self) -> (String, &'static str) {
        match self {
            Call::Upload => ("/files".to_owned(), "POST"),
            Call::Create => ("/batches".to_owned(), "POST"),
            Call::Batch(id) => (format!("/batches/{id}"), "GET"),
            Call::Cancel(id) => (format!("/batches/{id}/cancel"), "POST"),
            Call::File(id) => (format!("/files/{id}"), "GET"),
            Call::Content(id) => (format!("/files/{id}/content"), "GET"),
        }
    }
}

/// Whether `path` belongs to the Batch API (`/v1/files...`, `/v1/batches...`).
pub fn is_batch_path(path: &str) -> bool {
    ["/v1/files", "/v1/batches"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

/// The call a method and path name; a 404 for a path of the Batch API the router does not
/// serve (or an id it could not have given out), a 405 with `allow` for the wrong method.
pub fn call_of<'p>(method: &str, path: &'p str) -> Result<Call<'p>, RouterError> {
    let not_found = || RouterError::NotFound {
        method: method.to_owned(),
        path: path.to_owned(),
    };
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (call, allow) = match parts.as_slice() {
        ["v1", "files"] => (Call::Upload, "POST"),
        ["v1", "batches"] => (Call::Create, "POST"),
        ["v1", "batches", id] => (Call::Batch(id), "GET"),
        ["v1", "batches", id, "cancel"] => (Call::Cancel(id), "POST"),
        ["v1", "files", id] => (Call::File(id), "GET"),
        ["v1", "files", id, "content"] => (Call::Content(id), "GET"),
        _ => return Err(not_found()),
    };
    if call.object().is_some_and(|(_, id)| !is_id(id)) {
        return Err(not_found());
    }
    super::endpoint::allowed(method, path, allow).map(|()| call)
}

/// Whether `id` can be a provider's file or batch id: it goes into the provider's URL, so only
/// letters, digits, `_`, `-` and `.` (not alone), at most 128 of them.
fn is_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Who owns a file or batch: the caller's gateway key, known by a hash of it (never the key), or
/// everyone alike when the gateway has no keys.
pub fn owner_of(authorization: Option<&str>, keys_required: bool) -> String {
    // Read as the gateway's check reads it (the scheme in any case), so that the key it
    // admitted is the key that owns.
    let key = authorization
        .and_then(super::auth::bearer)
        .filter(|_| keys_required);
    match key {
        Some(key) => {
            let mut hex = super::auth::hash_hex(key);
            hex.truncate(32);
            format!("key-{hex}")
        }
        None => "anyone".to_owned(),
    }
}

/// A file or batch as the registry keeps it: which provider made it, with which key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub provider: String,
    pub key_id: String,
}

/// A call to an owner's registry (a Durable Object per owner, so that nobody else's ids are
/// even looked at).
// Externally tagged: an internally tagged enum makes serde buffer every value and compile its
// deserializer twice (docs/performance.md, bundle size).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// The record of `file:id` or `batch:id`, if this owner has it.
    Get { name: String },
    /// Remembers these records (names as in `Get`).
    Put { records: Vec<(String, Record)> },
}

/// The registry's name for a file or batch.
pub fn record_name(kind: Kind, id: &str) -> String {
    format!("{}:{id}", kind.name())
}

/// The ids a provider's batch object names: its own, and its output and error files once the
/// batch has them. Missing or unreadable fields are `None`.
#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
pub struct BatchIds {
    pub id: Option<String>,
    pub input_file_id: Option<String>,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
}

impl BatchIds {
    /// Reads the ids from a batch object (or a create request's body).
    pub fn of(body: &[u8]) -> BatchIds {
        serde_json::from_slice(body).unwrap_or_default()
    }

    /// The records a batch object gives `record` to remember: the batch and its files.
    pub fn records(&self, record: &Record) -> Vec<(String, Record)> {
        let batch = self.id.iter().map(|id| (Kind::Batch, id));
        let files = [&self.output_file_id, &self.error_file_id]
            .into_iter()
            .flatten()
            .map(|id| (Kind::File, id));
        batch
            .chain(files)
            .filter(|(_, id)| is_id(id))
            .map(|(kind, id)| (record_name(kind, id), record.clone()))
            .collect()
    }
}

/// What a provider's failed answer to `call` means for the client: its own refusal of the
/// request (scrubbed of account details), a 404 for an id it does not know, a 429 with its
/// wait for its batch limits, the operator's key problem, or its failure.
pub fn failure(
    call: &Call<'_>,
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    secret: &str,
) -> RouterError {
    match outcome::classify(status, retry_after, body) {
        Outcome::NotServed(err) => match call.object() {
            Some((kind, id)) => RouterError::NoSuchObject {
                kind: kind.name(),
                id: id.to_owned(),
            },
            None => err,
        },
        Outcome::Rejected(err) | Outcome::TooLarge(err) => err,
        Outcome::RateLimited(refusal) | Outcome::Billing(refusal) => RouterError::QuotaExhausted {
            retry_after_s: refusal.retry_after_ms.map(|ms| ms.div_ceil(1_000).max(1)),
        },
        Outcome::Auth { status } => RouterError::UpstreamAuth {
            status,
            secret: secret.to_owned(),
        },
        Outcome::Success
        | Outcome::Capacity
        | Outcome::ServerError { .. }
        | Outcome::Timeout
        | Outcome::Transport
        | Outcome::BadAnswer => RouterError::UpstreamFailed { status },
    }
}

/// What the registry learns from the provider's successful answer to `call`: an upload's file,
/// a batch and the output and error files it names once it has them.
pub fn remembered(call: &Call<'_>, answer: &[u8], record: &Record) -> Vec<(String, Record)> {
    let ids = BatchIds::of(answer);
    match call {
        Call::Upload => ids
            .id
            .iter()
            .filter(|id| is_id(id))
            .map(|id| (record_name(Kind::File, id), record.clone()))
            .collect(),
        Call::Create | Call::Batch(_) | Call::Cancel(_) => ids.records(record),
        Call::File(_) | Call::Content(_) => Vec::new(),
    }
}

/// Whether the provider's answer to `call` is handed on as it streams (a file's content, which
/// may be as large as its input), rather than read whole for the ids in it.
pub fn hands_on(call: &Call<'_>, status: u16) -> bool {
    matches!(call, Call::Content(_)) && (200..300).contains(&status)
}

/// The provider of a file or batch: the one that made it.
pub fn provider_of<'c>(config: &'c Config, record: &Record) -> Result<&'c Provider, RouterError> {
    config
        .providers
        .iter()
        .find(|p| p.name == record.provider)
        .ok_or_else(|| RouterError::InvalidConfig {
            path: format!("providers.{}", record.provider),
            detail: "a file or batch was made with this provider, which the configuration no \
                     longer names"
                .to_owned(),
        })
}

/// The key a file or batch was made with (`key_id`), or for a new upload the provider's first
/// key whose secret is set; the secret to set when it is not.
pub fn key_for<'c>(
    provider: &'c Provider,
    key_id: Option<&str>,
) -> Result<(&'c Key, &'c Secret), RouterError> {
    let key = match key_id {
        Some(id) => provider.keys.iter().find(|k| k.id == id),
        None => provider.keys.iter().find(|k| k.value.is_some()),
    };
    let Some(key) = key else {
        return Err(RouterError::MissingSecret {
            names: provider
                .keys
                .iter()
                .map(|k| k.secret_name.clone())
                .collect(),
        });
    };
    match &key.value {
        Some(secret) => Ok((key, secret)),
        None => Err(RouterError::MissingSecret {
            names: vec![key.secret_name.clone()],
        }),
    }
}

/// The headers of a call to the provider, as [`super::upstream::Lines`] text: the router's key
/// (never the client's credentials), and the body's type when it has one.
pub fn request_headers(secret: &Secret, content_type: Option<&str>) -> String {
    let auth = format!("Bearer {}", secret.expose());
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("accept", "application/json"),
    ];
    if let Some(content_type) = content_type {
        headers.push(("content-type", content_type));
    }
    super::upstream::lines(headers)
}

/// The longest JSONL line of an upload: each request of a batch is one line.
pub const MAX_LINE: usize = 4 << 20;
/// The longest headers of one part of the upload.
const MAX_PART_HEADERS: usize = 16 << 10;

/// Where the upload's multipart body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first boundary.
    Preamble,
    /// Just after a boundary: `\r\n` (a part follows) or `--` (the end).
    Delimiter,
    /// A part's headers, up to a blank line.
    Headers,
    /// A part's content: the JSONL file, the `purpose`, or another field.
    Content(Part),
    /// After the closing boundary.
    Epilogue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    File,
    Purpose,
    Other,
}

/// The upload (`multipart/form-data`) on its way to the provider: fed the body chunk by chunk,
/// it writes out the same body with each JSONL line's `body.model` (a route name, or a model
/// id) replaced by the provider's model id. Only the current line is held, so a file of any
/// size passes in bounded memory. The provider is the first on the first line's route that
/// serves batches and has a key ([`Upload::provider`]); every other line must name a model that
/// provider serves.
#[derive(Debug)]
pub struct Upload {
    /// `\r\n--boundary`.
    delimiter: Vec<u8>,
    state: State,
    pending: Vec<u8>,
    /// Lines of the file seen so far.
    line: usize,
    provider: Option<usize>,
    purpose: Vec<u8>,
    saw_file: bool,
    /// Bytes written out before the provider was known (all held by the edge until then).
    held: usize,
    /// How many bytes at the start of `pending` are known to hold no line break and no start of
    /// the delimiter, so that a long line is not scanned again with every chunk.
    scanned: usize,
}

/// The most an upload may hold before its first request line names its provider: a line, and
/// room for the parts before it.
const MAX_BEFORE_FIRST_LINE: usize = MAX_LINE + (64 << 10);

impl Upload {
    /// A rewriter for a body sent with `content_type` (which must be `multipart/form-data` with
    /// its boundary).
    pub fn new(content_type: Option<&str>) -> Result<Self, RouterError> {
        let boundary = content_type.and_then(multipart_boundary).ok_or_else(|| {
            upload_error(
                "An upload is sent as multipart/form-data, with the JSONL in the `file` \
                     field and `purpose` set to `batch` (as the OpenAI SDKs send it)."
                    .to_owned(),
            )
        })?;
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        Ok(Upload {
            delimiter,
            state: State::Preamble,
            pending: Vec::new(),
            line: 0,
            provider: None,
            purpose: Vec::new(),
            saw_file: false,
            held: 0,
            scanned: 0,
        })
    }

    /// The provider the upload goes to (an index into the configuration's providers), once the
    /// first line has named its model.
    pub fn provider(&self) -> Option<usize> {
        self.provider
    }

    /// Feeds one chunk of the body; what is ready to send is appended to `out`.
    pub fn push(
        &mut self,
        config: &Config,
        chunk: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RouterError> {
        self.pending.extend_from_slice(chunk);
        let before = out.len();
        self.advance(config, out, false)?;
        if self.provider.is_none() {
            self.held += out.len() - before;
            if self.held + self.pending.len() > MAX_BEFORE_FIRST_LINE {
                return Err(upload_error(format!(
                    "The upload's first request line must come within its first {} bytes.",
                    MAX_BEFORE_FIRST_LINE
                )));
            }
        }
        Ok(())
    }

    /// The body has ended: the rest is appended to `out`, or the upload was incomplete.
    pub fn finish(&mut self, config: &Config, out: &mut Vec<u8>) -> Result<(), RouterError> {
        self.advance(config, out, true)?;
        if self.state != State::Epilogue {
            return Err(upload_error(
                "The upload ended before its closing multipart boundary.".to_owned(),
            ));
        }
        if !self.saw_file || self.provider.is_none() {
            return Err(upload_error(
                "The upload has no `file` field with at least one request line.".to_owned(),
            ));
        }
        if self.purpose != b"batch" {
            return Err(purpose_error());
        }
        Ok(())
    }

    fn advance(
        &mut self,
        config: &Config,
        out: &mut Vec<u8>,
        end: bool,
    ) -> Result<(), RouterError> {
        // Taken while it is read, so that the lines can be rewritten from it in place.
        let mut pending = std::mem::take(&mut self.pending);
        let mut start = 0;
        let result = loop {
            let rest = &pending[start..];
            let step = match self.state {
                State::Preamble => {
                    // The first boundary has no line break before it.
                    let dash_boundary = &self.delimiter[2..];
                    match find(rest, dash_boundary) {
                        Some(i) => {
                            out.extend_from_slice(&rest[..i + dash_boundary.len()]);
                            self.state = State::Delimiter;
                            i + dash_boundary.len()
                        }
                        None => 0,
                    }
                }
                State::Delimiter => {
                    if rest.len() < 2 {
                        0
                    } else {
                        out.extend_from_slice(&rest[..2]);
                        self.state = match &rest[..2] {
                            b"\r\n" => State::Headers,
                            b"--" => State::Epilogue,
                            _ => {
                                break Err(upload_error(
                                    "The multipart body has a malformed boundary.".to_owned(),
                                ))
                            }
                        };
                        2
                    }
                }
                State::Headers => match find(rest, b"\r\n\r\n") {
                    Some(i) => {
                        let part = match part_of(&rest[..i]) {
                            Ok(part) => part,
                            Err(e) => break Err(e),
                        };
                        if part == Part::File {
                            if self.saw_file {
                                break Err(upload_error(
                                    "The upload has more than one `file` field.".to_owned(),
                                ));
                            }
                            self.saw_file = true;
                        }
                        out.extend_from_slice(&rest[..i + 4]);
                        self.state = State::Content(part);
                        i + 4
                    }
                    None if rest.len() > MAX_PART_HEADERS => {
                        break Err(upload_error(
                            "A part of the multipart body has headers longer than 16 KiB."
                                .to_owned(),
                        ))
                    }
                    None => 0,
                },
                State::Content(part) => {
                    // What an earlier pass already scanned holds neither.
                    let skip = if start == 0 {
                        self.scanned.min(rest.len())
                    } else {
                        0
                    };
                    let found = find(&rest[skip..], &self.delimiter).map(|i| i + skip);
                    // Without the delimiter, what may be its start stays pending.
                    let safe = match found {
                        Some(i) => i,
                        None => rest.len().saturating_sub(self.delimiter.len() - 1),
                    };
                    let used = match part {
                        Part::File => {
                            let content = &rest[..safe];
                            let lines_end = match found {
                                Some(_) => content.len(),
                                None => content[skip.min(content.len())..]
                                    .iter()
                                    .rposition(|b| *b == b'\n')
                                    .map_or(0, |i| i + skip + 1),
                            };
                            if let Err(e) = self.lines(config, &content[..lines_end], out) {
                                break Err(e);
                            }
                            if found.is_none() && rest.len() - lines_end > MAX_LINE {
                                break Err(upload_error(format!(
                                    "Line {} of the file is longer than {} bytes.",
                                    self.line + 1,
                                    MAX_LINE
                                )));
                            }
                            lines_end
                        }
                        Part::Purpose => {
                            self.purpose.extend_from_slice(&rest[..safe]);
                            if self.purpose.len() > 64 {
                                break Err(upload_error(
                                    "The `purpose` field is too long.".to_owned(),
                                ));
                            }
                            out.extend_from_slice(&rest[..safe]);
                            safe
                        }
                        Part::Other => {
                            out.extend_from_slice(&rest[..safe]);
                            safe
                        }
                    };
                    match found {
                        Some(i) if used == i => {
                            // A purpose other than batch is refused before any more is sent.
                            if part == Part::Purpose && self.purpose != b"batch" {
                                break Err(purpose_error());
                            }
                            out.extend_from_slice(&self.delimiter);
                            self.state = State::Delimiter;
                            i + self.delimiter.len()
                        }
                        _ => used,
                    }
                }
                State::Epilogue => {
                    out.extend_from_slice(rest);
                    rest.len()
                }
            };
            if step == 0 {
                break Ok(());
            }
            start += step;
        };
        pending.drain(..start);
        self.pending = pending;
        self.scanned = match self.state {
            State::Content(_) => self.pending.len().saturating_sub(self.delimiter.len()),
            _ => 0,
        };
        if end && self.state == State::Epilogue {
            out.append(&mut self.pending);
        }
        result
    }

    /// Rewrites the lines of `content` (the last one may have no line break) into `out`.
    fn lines(
        &mut self,
        config: &Config,
        content: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RouterError> {
        for line in content.split_inclusive(|b| *b == b'\n') {
            let body_end = line
                .iter()
                .rposition(|b| !matches!(b, b'\n' | b'\r'))
                .map_or(0, |i| i + 1);
            let (text, ending) = line.split_at(body_end);
            if text.iter().all(u8::is_ascii_whitespace) {
                out.extend_from_slice(line);
                continue;
            }
            self.line += 1;
            self.rewrite(config, text, out)?;
            out.extend_from_slice(ending);
        }
        Ok(())
    }

    /// One request line, with its body's model replaced by the provider's id.
    fn rewrite(
        &mut self,
        config: &Config,
        text: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RouterError> {
        let n = self.line;
        let bad = |what: &str| upload_error(format!("Line {n} of the file {what}."));
        let line: RawObject = serde_json::from_slice(text)
            .map_err(|_| bad("is not a JSON object (one request per line)"))?;
        let body = line
            .get("body")
            .ok_or_else(|| bad("has no `body` object"))?;
        let body: RawObject = serde_json::from_str(body.get())
            .map_err(|_| bad("has a `body` that is not a JSON object"))?;
        let model: Cow<'_, str> = body
            .get("model")
            .and_then(|m| serde_json::from_str(m.get()).ok())
            .ok_or_else(|| bad("has no `body.model`"))?;
        let targets = config.targets(&model).ok_or_else(|| {
            bad(&format!(
                "names the model `{}`, which this router does not serve",
                model.chars().take(200).collect::<String>()
            ))
        })?;
        let provider = match self.provider {
            Some(p) => p,
            None => {
                let p = targets
                    .iter()
                    .map(|t| t.provider)
                    .find(|p| {
                        config
                            .providers
                            .get(*p)
                            .is_some_and(|p| p.batch && p.usable_key().is_some())
                    })
                    .ok_or_else(|| {
                        bad(&format!(
                            "names `{model}`, which no provider with batches (and a key) serves"
                        ))
                    })?;
                self.provider = Some(p);
                p
            }
        };
        let target = targets
            .iter()
            .find(|t| t.provider == provider)
            .ok_or_else(|| {
                let name = config
                    .providers
                    .get(provider)
                    .map_or("", |p| p.name.as_str());
                bad(&format!(
                    "names `{model}`, which `{name}` (where this file goes, from its first line) \
                 does not serve: a batch goes to one provider"
                ))
            })?;
        let id = serde_json::to_string(&target.model).map_err(|_| bad("cannot be written"))?;
        let body = object_text(body.0.iter().map(|(k, v)| match k.as_ref() {
            "model" => ("model", id.as_str()),
            k => (k, v.get()),
        }));
        let line = object_text(line.0.iter().map(|(k, v)| match k.as_ref() {
            "body" => ("body", body.as_str()),
            k => (k, v.get()),
        }));
        out.extend_from_slice(line.as_bytes());
        Ok(())
    }
}

fn purpose_error() -> RouterError {
    upload_error(
        "Only `purpose` `batch` is served: files for other purposes are not kept here.".to_owned(),
    )
}

fn upload_error(message: String) -> RouterError {
    RouterError::InvalidRequest {
        message,
        param: Some("file".to_owned()),
        code: "invalid_batch_file",
    }
}

/// The boundary of a `multipart/form-data` content type.
fn multipart_boundary(content_type: &str) -> Option<&str> {
    let mut params = content_type.split(';');
    let kind = params.next()?.trim();
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim().trim_matches('"');
        (!value.is_empty() && value.len() <= 200).then_some(value)
    })
}

/// Which field a part's headers name, read as the providers' parsers read them: one
/// `Content-Disposition`, its parameter names in any case, quoted values with `;` inside them.
/// Anything ambiguous is refused, so that no part the router passes as it is could be a file
/// to the provider.
fn part_of(headers: &[u8]) -> Result<Part, RouterError> {
    let ambiguous =
        || upload_error("A part of the upload has an unclear Content-Disposition.".to_owned());
    let text = String::from_utf8_lossy(headers);
    let mut dispositions = text.split("\r\n").filter_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-disposition")
            .then_some(value)
    });
    let (Some(disposition), None) = (dispositions.next(), dispositions.next()) else {
        return Err(ambiguous());
    };
    let mut names = params(disposition)
        .into_iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("name"))
        .map(|(_, v)| v);
    let (name, None) = (names.next(), names.next()) else {
        return Err(ambiguous());
    };
    Ok(match name.as_deref() {
        Some("file") => Part::File,
        Some("purpose") => Part::Purpose,
        _ => Part::Other,
    })
}

/// The `key=value` parameters of a header value (after its first `;`), values unquoted.
fn params(value: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pieces = Vec::new();
    let (mut piece, mut quoted, mut escaped) = (String::new(), false, false);
    for c in value.chars() {
        match c {
            _ if escaped => {
                piece.push(c);
                escaped = false;
            }
            '\\' if quoted => escaped = true,
            '"' => {
                quoted = !quoted;
                piece.push(c);
            }
            ';' if !quoted => pieces.push(std::mem::take(&mut piece)),
            _ => piece.push(c),
        }
    }
    pieces.push(piece);
    for p in pieces.into_iter().skip(1) {
        if let Some((k, v)) = p.split_once('=') {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            out.push((k.trim().to_owned(), v.to_owned()));
        }
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut at = 0;
    while let Some(i) = haystack[at..=haystack.len() - needle.len()]
        .iter()
        .position(|b| *b == first)
    {
        let i = at + i;
        if &haystack[i..i + needle.len()] == needle {
            return Some(i);
        }
        at = i + 1;
    }
    None
}

#[cfg(test)]
mod tests;
