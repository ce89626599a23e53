//! A streamed chat completion: server-sent events read line by line until `data: [DONE]`, the
//! reply put together from the chunks, and the time to its first chunk with content.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Answer, MAX_UPSTREAM_BYTES, MAX_UPSTREAM_MESSAGE, Upstream};

/// Reads a streamed chat completion: server-sent events whose data are chunks, ended by
/// `data: [DONE]`.
pub(super) async fn read_stream(
    mut response: reqwest::Response,
    started: Instant,
) -> Result<Answer, Upstream> {
    let mut stream = Stream::default();
    let mut pending: Vec<u8> = Vec::new();
    let mut read = 0;
    while !stream.done {
        let Some(bytes) = response
            .chunk()
            .await
            .map_err(|e| Upstream::transport(&e, true))?
        else {
            // The end: a last line without its newline still counts, then the event it ends.
            if !pending.is_empty() {
                stream.line(&std::mem::take(&mut pending), started)?;
            }
            stream.line(b"", started)?;
            break;
        };
        read += bytes.len();
        if read > MAX_UPSTREAM_BYTES {
            return Err(Upstream::Malformed("is larger than 8 MiB"));
        }
        pending.extend_from_slice(&bytes);
        // Lines are split on bytes, so a character cut in two by the network is whole again by
        // the time its line is decoded.
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            stream.line(&line, started)?;
            if stream.done {
                break;
            }
        }
    }
    if !stream.done {
        return Err(Upstream::Broken(
            "the stream ended before data: [DONE]".to_owned(),
        ));
    }
    stream.answer(started)
}

/// What a streamed answer has said so far.
#[derive(Default)]
struct Stream {
    /// The `data` of the event being read, its lines joined by newlines as the format says.
    data: String,
    model: Option<String>,
    reply: String,
    first_chunk: Option<Duration>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    /// `data: [DONE]` was read.
    done: bool,
}

impl Stream {
    fn line(&mut self, line: &[u8], started: Instant) -> Result<(), Upstream> {
        let line = std::str::from_utf8(line).map_err(|_| Upstream::Malformed("is not UTF-8"))?;
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            return self.event(started);
        }
        // The other fields (`event:`, `id:`, `retry:`) and comments (`:`) say nothing the answer
        // needs.
        if let Some(data) = line.strip_prefix("data:") {
            if !self.data.is_empty() {
                self.data.push('\n');
            }
            self.data.push_str(data.strip_prefix(' ').unwrap_or(data));
        }
        Ok(())
    }

    /// Takes in the event just ended by a blank line.
    fn event(&mut self, started: Instant) -> Result<(), Upstream> {
        let data = std::mem::take(&mut self.data);
        if data.is_empty() {
            return Ok(());
        }
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let chunk: Value = serde_json::from_str(&data)
            .map_err(|_| Upstream::Malformed("has a chunk that is not JSON"))?;
        if let Some(message) = chunk.pointer("/error/message").and_then(Value::as_str) {
            return Err(Upstream::Broken(
                message.chars().take(MAX_UPSTREAM_MESSAGE).collect(),
            ));
        }
        // Azure's first chunk, with the prompt's content filter results, names no model.
        if self.model.is_none() {
            self.model = chunk
                .get("model")
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
                .map(str::to_owned);
        }
        let content = chunk
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !content.is_empty() {
            self.first_chunk.get_or_insert_with(|| started.elapsed());
            self.reply.push_str(content);
        }
        // Only the last chunk has usage (with `include_usage`); the others have null.
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.input_tokens = usage.get("prompt_tokens").and_then(Value::as_u64);
            self.output_tokens = usage.get("completion_tokens").and_then(Value::as_u64);
        }
        Ok(())
    }

    fn answer(self, started: Instant) -> Result<Answer, Upstream> {
        let model = self.model.ok_or(Upstream::Malformed("has no model"))?;
        Ok(Answer {
            model,
            reply: self.reply,
            // An answer without content (an empty reply) had its first chunk when it ended:
            // nothing was generated after it.
            first_chunk: Some(self.first_chunk.unwrap_or_else(|| started.elapsed())),
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
        })
    }
}
