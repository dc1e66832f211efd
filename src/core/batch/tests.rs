use super::*;
use serde_json::{json, Value};

fn config() -> Config {
    let doc = json!({
        "providers": {
            "groq": {"keys": [{"id": "g1", "secret": "G1"}]},
            "together": {"keys": [{"id": "t1", "secret": "T1"}]},
            "fireworks": {"keys": [{"id": "f1", "secret": "F1"}]}
        },
        "routes": {
            "fast": ["groq/llama-3.1-8b-instant"],
            "slow": ["fireworks/m-f", "together/m-t", "groq/llama-3.3-70b-versatile"],
            "both": ["groq/llama-3.1-8b-instant", "together/m-t2"]
        }
    });
    Config::parse(&doc.to_string(), |n| {
        (!n.ends_with("_HASHES")).then(|| format!("sk-{n}"))
    })
    .unwrap()
}

const BOUNDARY: &str = "----formdata-test-7f3a";

fn content_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// A multipart body as the SDKs send it: `purpose` then `file` (or the other way round).
fn multipart(file: &str, purpose: &str, file_first: bool) -> Vec<u8> {
    let file_part = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.jsonl\"\r\n\
         Content-Type: application/jsonl\r\n\r\n{file}\r\n"
    );
    let purpose_part = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n"
    );
    let (a, b) = match file_first {
        true => (file_part, purpose_part),
        false => (purpose_part, file_part),
    };
    format!("{a}{b}--{BOUNDARY}--\r\n").into_bytes()
}

fn line(id: usize, model: &str) -> String {
    json!({"custom_id": format!("r-{id}"), "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": model, "messages": [{"role": "user", "content": "hi \\n \"q\""}],
                    "max_tokens": 5}})
    .to_string()
}

/// Runs the upload through in chunks of `size` bytes.
fn rewrite(c: &Config, body: &[u8], size: usize) -> Result<(Vec<u8>, Option<usize>), RouterError> {
    let mut upload = Upload::new(Some(&content_type()))?;
    let mut out = Vec::new();
    for chunk in body.chunks(size) {
        upload.push(c, chunk, &mut out)?;
    }
    upload.finish(c, &mut out)?;
    Ok((out, upload.provider()))
}

fn provider_name(c: &Config, p: Option<usize>) -> &str {
    &c.providers[p.unwrap()].name
}

#[test]
fn the_calls_of_the_batch_api() {
    assert_eq!(call_of("POST", "/v1/files"), Ok(Call::Upload));
    assert_eq!(call_of("POST", "/v1/batches"), Ok(Call::Create));
    assert_eq!(
        call_of("GET", "/v1/batches/batch_01"),
        Ok(Call::Batch("batch_01"))
    );
    assert_eq!(
        call_of("POST", "/v1/batches/b-1/cancel"),
        Ok(Call::Cancel("b-1"))
    );
    assert_eq!(call_of("GET", "/v1/files/file_9"), Ok(Call::File("file_9")));
    assert_eq!(
        call_of("GET", "/v1/files/file_9/content"),
        Ok(Call::Content("file_9"))
    );
    assert_eq!(
        Call::Content("f").upstream(),
        ("/files/f/content".to_owned(), "GET")
    );
    assert_eq!(
        Call::Cancel("b").upstream(),
        ("/batches/b/cancel".to_owned(), "POST")
    );
    assert_eq!(call_of("GET", "/v1/files").unwrap_err().status(), 405);
    assert_eq!(
        call_of("DELETE", "/v1/batches/b").unwrap_err().status(),
        405
    );
    // An id goes into the provider's URL: nothing that could leave its path.
    for path in [
        "/v1/files/..",
        "/v1/files/a%2F..",
        "/v1/batches/x/y",
        "/v1/files/a/content/b",
    ] {
        assert_eq!(call_of("GET", path).unwrap_err().status(), 404, "{path}");
    }
    assert!(is_batch_path("/v1/files/x") && is_batch_path("/v1/batches"));
    assert!(!is_batch_path("/v1/filesystem") && !is_batch_path("/v1/chat/completions"));
}

#[test]
fn each_line_gets_the_providers_model_id_whatever_the_chunks() {
    let c = config();
    let file = [
        line(1, "fast"),
        line(2, "llama-3.1-8b-instant"),
        line(3, "both"),
    ]
    .join("\n")
        + "\n";
    for file_first in [true, false] {
        let body = multipart(&file, "batch", file_first);
        let (whole, provider) = rewrite(&c, &body, body.len()).unwrap();
        assert_eq!(provider_name(&c, provider), "groq");
        let text = String::from_utf8(whole.clone()).unwrap();
        let expected = multipart(
            &[
                line(1, "llama-3.1-8b-instant"),
                line(2, "llama-3.1-8b-instant"),
                line(3, "llama-3.1-8b-instant"),
            ]
            .join("\n"),
            "batch",
            file_first,
        );
        // The file's last line break stays where it was.
        let expected = String::from_utf8(expected).unwrap().replace(
            &format!("{}\r\n--", line(3, "llama-3.1-8b-instant")),
            &format!("{}\n\r\n--", line(3, "llama-3.1-8b-instant")),
        );
        assert_eq!(text, expected);
        for size in 1..=40 {
            assert_eq!(
                rewrite(&c, &body, size).unwrap().0,
                whole,
                "chunks of {size}"
            );
        }
    }
}

#[test]
fn fields_other_than_the_model_pass_as_written() {
    let c = config();
    let raw = r#"{"custom_id":"a\u00e9","method":"POST","url":"/v1/chat/completions","body":{"model":"fast","temperature":1.50,"messages":[{"role":"user","content":"\u2603"}],"x":{"k":[1,2]}},"extra":null}"#;
    let body = multipart(&format!("{raw}\r\n\r\n"), "batch", false);
    let (out, _) = rewrite(&c, &body, 7).unwrap();
    let text = String::from_utf8(out).unwrap();
    let expected = raw.replace(r#""model":"fast""#, r#""model":"llama-3.1-8b-instant""#);
    // CRLF line endings and the blank line are kept.
    assert!(
        text.contains(&format!("{expected}\r\n\r\n\r\n--")),
        "{text}"
    );
}

#[test]
fn the_provider_is_the_first_on_the_route_that_serves_batches() {
    let c = config();
    // Fireworks has no batches: the slow route's file goes to Together.
    let body = multipart(&line(1, "slow"), "batch", true);
    let (out, provider) = rewrite(&c, &body, 64).unwrap();
    assert_eq!(provider_name(&c, provider), "together");
    let text = String::from_utf8(out).unwrap();
    let sent: Value =
        serde_json::from_str(text.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(sent["body"]["model"], "m-t");
}

#[test]
fn a_line_the_provider_cannot_serve_is_a_400_naming_it() {
    let c = config();
    for (file, says) in [
        (
            format!("{}\n{}", line(1, "fast"), line(2, "nope")),
            "Line 2 of the file names the model `nope`",
        ),
        // The file goes to Groq (its first line); Together's model cannot join it.
        (
            format!("{}\n{}", line(1, "fast"), line(2, "m-t")),
            "Line 2 of the file names `m-t`, which `groq`",
        ),
        (
            "{\"custom_id\":1}".to_owned(),
            "Line 1 of the file has no `body` object",
        ),
        (
            "not json".to_owned(),
            "Line 1 of the file is not a JSON object",
        ),
        (
            line(1, "fireworks-only"),
            "names the model `fireworks-only`",
        ),
    ] {
        let err = rewrite(&c, &multipart(&file, "batch", true), 5).unwrap_err();
        assert_eq!(err.status(), 400);
        assert_eq!(err.param(), Some("file"));
        assert!(err.message().contains(says), "{}", err.message());
    }
}

#[test]
fn an_upload_that_is_not_a_whole_batch_file_is_refused() {
    let c = config();
    let err = |body: &[u8]| rewrite(&c, body, 9).unwrap_err().message();
    assert!(err(&multipart(&line(1, "fast"), "fine-tune", true)).contains("purpose"));
    assert!(err(&multipart("", "batch", true)).contains("no `file` field"));
    let body = multipart(&line(1, "fast"), "batch", true);
    assert!(err(&body[..body.len() - 10]).contains("closing multipart boundary"));
    assert!(Upload::new(Some("application/json")).is_err());
    assert!(Upload::new(None).is_err());
}

#[test]
fn a_line_longer_than_the_limit_is_refused_before_it_is_held() {
    let c = config();
    let mut upload = Upload::new(Some(&content_type())).unwrap();
    let mut out = Vec::new();
    let head = multipart("", "batch", true);
    let head = &head[..head.iter().position(|b| *b == b'\n').unwrap() + 1];
    upload.push(&c, head, &mut out).unwrap();
    upload
        .push(
            &c,
            b"Content-Disposition: form-data; name=\"file\"\r\n\r\n",
            &mut out,
        )
        .unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut pushed = 0;
    let err = loop {
        match upload.push(&c, &chunk, &mut out) {
            Ok(()) => pushed += chunk.len(),
            Err(e) => break e,
        }
        assert!(pushed <= MAX_LINE + chunk.len(), "never refused");
    };
    assert!(err.message().contains("longer than"), "{}", err.message());
    assert!(upload.pending.len() <= MAX_LINE + chunk.len() + 64);
}

#[test]
fn a_batch_object_gives_its_id_and_its_files() {
    let record = Record {
        provider: "groq".to_owned(),
        key_id: "g1".to_owned(),
    };
    let ids = BatchIds::of(
        br#"{"id":"batch_1","object":"batch","input_file_id":"file_in","output_file_id":"file_out","error_file_id":null}"#,
    );
    let names: Vec<String> = ids.records(&record).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["batch:batch_1", "file:file_out"]);
    assert_eq!(ids.input_file_id.as_deref(), Some("file_in"));
    assert_eq!(BatchIds::of(b"not json"), BatchIds::default());
    // An id that could not be a path segment is not remembered.
    assert!(BatchIds::of(br#"{"id":"../x"}"#)
        .records(&record)
        .is_empty());
}

#[test]
fn an_owner_is_a_hash_of_the_gateway_key() {
    let a = owner_of(Some("Bearer sk-a"), true);
    assert_eq!(a, owner_of(Some("Bearer  sk-a "), true));
    // The scheme in any case, as the gateway admits it: the same key, the same owner.
    assert_eq!(a, owner_of(Some("bearer sk-a"), true));
    assert_ne!(a, owner_of(Some("BEARER sk-b"), true));
    assert_ne!(owner_of(Some("bearer sk-b"), true), "anyone");
    assert_ne!(a, owner_of(Some("Bearer sk-b"), true));
    assert!(a.starts_with("key-") && !a.contains("sk-a"));
    assert_eq!(owner_of(Some("Bearer sk-a"), false), "anyone");
}

#[test]
fn what_each_answer_registers() {
    let record = Record {
        provider: "groq".to_owned(),
        key_id: "g1".to_owned(),
    };
    let names = |call: Call<'_>, answer: &str| -> Vec<String> {
        remembered(&call, answer.as_bytes(), &record)
            .into_iter()
            .map(|(n, r)| {
                assert_eq!(r, record);
                n
            })
            .collect()
    };
    assert_eq!(
        names(Call::Upload, r#"{"id":"file-1","object":"file"}"#),
        ["file:file-1"]
    );
    let batch = r#"{"id":"batch_1","output_file_id":"file-o","error_file_id":"file-e"}"#;
    for call in [
        Call::Create,
        Call::Batch("batch_1"),
        Call::Cancel("batch_1"),
    ] {
        assert_eq!(
            names(call, batch),
            ["batch:batch_1", "file:file-o", "file:file-e"]
        );
    }
    // A file object's id is a file's, already known: nothing new.
    assert!(names(Call::File("file-1"), r#"{"id":"file-1"}"#).is_empty());
    assert!(hands_on(&Call::Content("f"), 200) && !hands_on(&Call::Content("f"), 404));
    assert!(!hands_on(&Call::Batch("b"), 200));
}

#[test]
fn a_provider_failure_reads_as_the_client_should_see_it() {
    let fail = |call: Call<'_>, status: u16, body: &str| {
        failure(&call, status, Some("12"), body.as_bytes(), "GROQ_KEY")
    };
    let err = fail(
        Call::Batch("batch_x"),
        404,
        r#"{"error":{"message":"No batch"}}"#,
    );
    assert_eq!((err.status(), err.code()), (404, Some("not_found")));
    let err = fail(
        Call::Create,
        400,
        r#"{"error":{"message":"bad window for org_abc123","type":"invalid_request_error"}}"#,
    );
    assert_eq!(err.status(), 400);
    assert!(!err.message().contains("org_abc123"), "{}", err.message());
    let err = fail(Call::Create, 429, "{}");
    assert_eq!(
        (err.status(), err.headers()),
        (429, vec![("retry-after", "12".to_owned())])
    );
    let err = fail(Call::Upload, 401, "{}");
    assert_eq!(err.code(), Some("upstream_auth_failed"));
    assert!(err.message().contains("GROQ_KEY"));
    assert_eq!(fail(Call::Upload, 503, "").status(), 502);
}

#[test]
fn the_key_of_a_file_is_the_one_that_made_it() {
    let doc = json!({
        "providers": {"groq": {"keys": [
            {"id": "unset", "secret": "UNSET"}, {"id": "g1", "secret": "G1"}, {"id": "g2", "secret": "G2"}
        ]}},
        "routes": {"fast": ["groq/m"]},
        "gateway": {"auth": false}
    });
    let c = Config::parse(&doc.to_string(), |n| {
        n.starts_with('G').then(|| format!("sk-{n}"))
    })
    .unwrap();
    let groq = &c.providers[0];
    assert_eq!(key_for(groq, None).unwrap().0.id, "g1");
    assert_eq!(key_for(groq, Some("g2")).unwrap().1.expose(), "sk-G2");
    let err = key_for(groq, Some("unset")).unwrap_err();
    assert_eq!(
        err,
        RouterError::MissingSecret {
            names: vec!["UNSET".to_owned()]
        }
    );
    let record = Record {
        provider: "gone".to_owned(),
        key_id: "g1".to_owned(),
    };
    assert_eq!(provider_of(&c, &record).unwrap_err().status(), 503);
    let lines = request_headers(
        key_for(groq, None).unwrap().1,
        Some("multipart/form-data; boundary=x"),
    );
    assert_eq!(
        lines,
        "authorization\nBearer sk-G1\naccept\napplication/json\ncontent-type\nmultipart/form-data; boundary=x\n"
    );
}

/// A multipart body of the given parts (headers, content), as written.
fn parts(list: &[(&str, &str)]) -> Vec<u8> {
    let mut out = String::new();
    for (headers, content) in list {
        out.push_str(&format!("--{BOUNDARY}\r\n{headers}\r\n\r\n{content}\r\n"));
    }
    out.push_str(&format!("--{BOUNDARY}--\r\n"));
    out.into_bytes()
}

#[test]
fn a_part_reads_as_the_providers_read_it_or_is_refused() {
    let c = config();
    let good = line(1, "fast");
    let hidden = line(2, "m-f");
    for (second, what) in [
        // Parameter names in any case, and a `;` inside a quoted value: still the file field.
        ("Content-Disposition: form-data; NAME=\"file\"", "more than one `file`"),
        (
            "Content-Disposition: form-data; filename=\"x;name=y\"; name=\"file\"",
            "more than one `file`",
        ),
        (
            "Content-Disposition: form-data; name=\"other\"\r\nContent-Disposition: form-data; name=\"file\"",
            "unclear Content-Disposition",
        ),
        ("Content-Disposition: form-data; name=\"a\"; name=\"file\"", "unclear Content-Disposition"),
        ("Content-Type: text/plain", "unclear Content-Disposition"),
    ] {
        let body = parts(&[
            ("Content-Disposition: form-data; name=\"purpose\"", "batch"),
            ("Content-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"", &good),
            (second, &hidden),
        ]);
        let err = rewrite(&c, &body, 16).unwrap_err();
        assert!(err.message().contains(what), "{second}: {}", err.message());
    }
    // A quoted name with a `;` in another parameter is read right.
    let body = parts(&[
        ("Content-Disposition: form-data; name=\"purpose\"", "batch"),
        (
            "content-disposition: form-data; filename=\"a;b.jsonl\"; Name=\"file\"",
            &good,
        ),
    ]);
    let (out, provider) = rewrite(&c, &body, 16).unwrap();
    assert_eq!(provider_name(&c, provider), "groq");
    assert!(String::from_utf8(out)
        .unwrap()
        .contains("llama-3.1-8b-instant"));
}

#[test]
fn an_upload_holds_a_bounded_amount_before_its_first_line() {
    let c = config();
    let mut upload = Upload::new(Some(&content_type())).unwrap();
    let mut out = Vec::new();
    let head = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"pad\"\r\n\r\n");
    upload.push(&c, head.as_bytes(), &mut out).unwrap();
    let chunk = vec![b'p'; 64 * 1024];
    let mut pushed = 0;
    let err = loop {
        match upload.push(&c, &chunk, &mut out) {
            Ok(()) => pushed += chunk.len(),
            Err(e) => break e,
        }
        assert!(pushed <= MAX_BEFORE_FIRST_LINE, "never refused");
    };
    assert!(
        err.message().contains("first request line"),
        "{}",
        err.message()
    );
}

#[test]
fn a_purpose_other_than_batch_is_refused_when_its_field_ends() {
    let c = config();
    let mut upload = Upload::new(Some(&content_type())).unwrap();
    let mut out = Vec::new();
    let body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n--{BOUNDARY}\r\n"
    );
    let err = upload.push(&c, body.as_bytes(), &mut out).unwrap_err();
    assert!(err.message().contains("purpose"), "{}", err.message());
}

#[test]
fn a_long_line_in_small_chunks_is_not_scanned_again_and_again() {
    // 4 MiB in 1 KiB chunks: quadratic rescanning took seconds; a scan from where the last one
    // stopped takes milliseconds. The rewrite is checked; the time is the benchmark's to show.
    let c = config();
    let body = line(1, "fast");
    let padded = body.replacen(
        "hi ",
        &format!("hi{} ", "q".repeat(MAX_LINE - body.len() - 64)),
        1,
    );
    assert!(padded.len() > MAX_LINE - 100);
    let multipart = multipart(&padded, "batch", true);
    let (out, provider) = rewrite(&c, &multipart, 1024).unwrap();
    assert_eq!(provider_name(&c, provider), "groq");
    assert_eq!(
        out.len(),
        multipart.len() + "llama-3.1-8b-instant".len() - "fast".len()
    );
}
