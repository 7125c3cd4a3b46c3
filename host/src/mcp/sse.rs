//! Server-Sent Events framing: encoding events for agents and an incremental decoder
//! for upstream streams. Hand-written because the format is a few lines of parsing and
//! the gateway needs byte-level control over buffering (no extra copies of large events).

/// One event as sent to an agent: `id` (optional) and one JSON-RPC message as data.
pub(crate) fn encode(id: Option<&str>, data: &str) -> String {
    let mut out = String::with_capacity(data.len() + 32);
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    out.push_str("event: message\n");
    // JSON text from serde_json has no raw newlines, but stay correct if it ever does.
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// A decoded event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Event {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: String,
}

/// Incremental SSE decoder: feed bytes as they arrive, take complete events out.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no line end.
    scanned: usize,
    current: Event,
    has_data: bool,
}

impl Decoder {
    pub(crate) fn new() -> Self {
        Decoder::default()
    }

    /// Adds bytes and returns every event completed by them. Each byte is looked at
    /// once: an unfinished line is not rescanned from its start when more of it comes.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        // `buf[..self.scanned]` held no line end when the last call returned.
        let mut from = self.scanned;
        let scanned = loop {
            let Some(pos) = self.buf[from..]
                .iter()
                .position(|&b| b == b'\n' || b == b'\r')
            else {
                break self.buf.len();
            };
            let end = from + pos;
            let mut next = end + 1;
            if self.buf[end] == b'\r' {
                match self.buf.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    // A lone '\r' at the end may be the first half of "\r\n": wait,
                    // and look at it again when more bytes come.
                    None => break end,
                }
            }
            let line = String::from_utf8_lossy(&self.buf[start..end]).into_owned();
            self.line(&line, &mut events);
            start = next;
            from = next;
        };
        self.buf.drain(..start);
        self.scanned = scanned - start;
        events
    }

    /// Bytes received but not yet part of a complete line.
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len() + self.current.data.len()
    }

    fn line(&mut self, line: &str, events: &mut Vec<Event>) {
        if line.is_empty() {
            if self.has_data {
                events.push(std::mem::take(&mut self.current));
            } else {
                self.current = Event::default();
            }
            self.has_data = false;
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.current.event = Some(value.to_string()),
            "id" => self.current.id = Some(value.to_string()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_split_events() {
        let mut d = Decoder::new();
        assert!(d.feed(b": comment\nevent: message\nid: 7\nda").is_empty());
        let ev = d.feed(b"ta: {\"a\":1}\n\ndata: x\r\ndata: y\r\n\r\n");
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].data, "{\"a\":1}");
        assert_eq!(ev[0].id.as_deref(), Some("7"));
        assert_eq!(ev[1].data, "x\ny");
    }

    #[test]
    fn cr_at_chunk_end_waits() {
        let mut d = Decoder::new();
        assert!(d.feed(b"data: 1\r").is_empty());
        assert!(d.feed(b"\n").is_empty());
        assert_eq!(d.feed(b"\r\n")[0].data, "1");
        assert!(d.feed(b"data: 2\r").is_empty());
        assert_eq!(d.feed(b"\r\r")[0].data, "2");
    }

    #[test]
    fn a_long_line_in_many_pieces_is_scanned_once() {
        let mut d = Decoder::new();
        assert!(d.feed(b"data: ").is_empty());
        for _ in 0..1000 {
            assert!(d.feed(&[b'x'; 100]).is_empty());
            assert_eq!(d.scanned, d.buf.len());
        }
        assert!(d.feed(b"\r").is_empty());
        assert_eq!(d.scanned, d.buf.len() - 1);
        let ev = d.feed(b"\n\n");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data.len(), 100_000);
        assert_eq!((d.buf.len(), d.scanned), (0, 0));
    }

    #[test]
    fn encode_roundtrips() {
        let mut d = Decoder::new();
        let ev = d.feed(encode(Some("s-1"), "{\"x\":2}").as_bytes());
        assert_eq!(
            ev,
            vec![Event {
                event: Some("message".into()),
                id: Some("s-1".into()),
                data: "{\"x\":2}".into()
            }]
        );
    }
}
