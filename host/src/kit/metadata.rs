//! Policy metadata embedded in the component itself: a custom section named
//! [`SECTION`] holding a small JSON object (name, version, author, description,
//! source, license, language). `policy build` and `policy annotate` write it;
//! `policy inspect` reads it.
//!
//! Custom sections are valid anywhere in a component (and a core module) and are
//! ignored by the runtime, so appending one changes the file's digest but not the
//! policy's behaviour. The section is written at the top level, after every other
//! section; an older metadata section is removed first.

use serde::{Deserialize, Serialize};

/// The custom section's name.
pub(crate) const SECTION: &str = "portcullis-policy-metadata";

/// The embedded metadata. Every field is optional; unknown fields are kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// The language the policy was written in (`rust`, `js`, `python`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Metadata {
    /// Overlays the fields set in `other` onto `self`.
    pub(crate) fn merge(&mut self, other: Metadata) {
        let pick = |a: &mut Option<String>, b: Option<String>| {
            if b.is_some() {
                *a = b;
            }
        };
        pick(&mut self.name, other.name);
        pick(&mut self.version, other.version);
        pick(&mut self.author, other.author);
        pick(&mut self.description, other.description);
        pick(&mut self.source, other.source);
        pick(&mut self.license, other.license);
        pick(&mut self.language, other.language);
        self.extra.extend(other.extra);
    }

    /// `(label, value)` for each field that is set, in display order.
    pub(crate) fn fields(&self) -> Vec<(&str, String)> {
        let mut out = Vec::new();
        for (k, v) in [
            ("name", &self.name),
            ("version", &self.version),
            ("author", &self.author),
            ("description", &self.description),
            ("source", &self.source),
            ("license", &self.license),
            ("language", &self.language),
        ] {
            if let Some(v) = v {
                out.push((k, v.clone()));
            }
        }
        for (k, v) in &self.extra {
            let v = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            out.push((k.as_str(), v));
        }
        out
    }
}

/// One top-level section of a Wasm binary.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Section<'a> {
    /// Byte range of the whole section (id, size and payload).
    pub start: usize,
    pub end: usize,
    /// For custom sections: the name and the data after it.
    pub custom: Option<(&'a str, &'a [u8])>,
}

/// Whether `bytes` start with the Wasm magic; `Some(true)` for a component,
/// `Some(false)` for a core module.
pub(crate) fn is_component(bytes: &[u8]) -> Option<bool> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return None;
    }
    // Core modules: version 1, layer 0. Components: layer 1.
    Some(bytes[6..8] == [1, 0])
}

fn read_leb_u32(bytes: &[u8], pos: &mut usize) -> anyhow::Result<u32> {
    let mut result: u64 = 0;
    for shift in (0..35).step_by(7) {
        let b = *bytes
            .get(*pos)
            .ok_or_else(|| anyhow::anyhow!("truncated section header at byte {pos}"))?;
        *pos += 1;
        result |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return u32::try_from(result).map_err(|_| anyhow::anyhow!("section size overflows"));
        }
    }
    anyhow::bail!("malformed LEB128 at byte {pos}")
}

fn write_leb_u32(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The top-level sections of a module or component (nested modules are not entered).
pub(crate) fn sections(bytes: &[u8]) -> anyhow::Result<Vec<Section<'_>>> {
    if is_component(bytes).is_none() {
        anyhow::bail!("not a WebAssembly binary (no \\0asm header)");
    }
    let mut out = Vec::new();
    let mut pos = 8;
    while pos < bytes.len() {
        let start = pos;
        let id = bytes[pos];
        pos += 1;
        let size = read_leb_u32(bytes, &mut pos)? as usize;
        let payload_start = pos;
        let end = payload_start
            .checked_add(size)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| anyhow::anyhow!("section at byte {start} runs past the end"))?;
        let custom = if id == 0 {
            let mut p = payload_start;
            let len = read_leb_u32(bytes, &mut p)? as usize;
            let name_end = p
                .checked_add(len)
                .filter(|&e| e <= end)
                .ok_or_else(|| anyhow::anyhow!("custom section name at byte {start} too long"))?;
            let name = std::str::from_utf8(&bytes[p..name_end])
                .map_err(|_| anyhow::anyhow!("custom section name at byte {start} not UTF-8"))?;
            Some((name, &bytes[name_end..end]))
        } else {
            None
        };
        out.push(Section { start, end, custom });
        pos = end;
    }
    Ok(out)
}

/// The embedded metadata, if the binary has a metadata section (the last one wins).
pub(crate) fn read(bytes: &[u8]) -> anyhow::Result<Option<Metadata>> {
    let Some((_, data)) = sections(bytes)?
        .into_iter()
        .filter_map(|s| s.custom)
        .rfind(|(name, _)| *name == SECTION)
    else {
        return Ok(None);
    };
    let meta = serde_json::from_slice(data)
        .map_err(|e| anyhow::anyhow!("the {SECTION} section is not valid JSON metadata: {e}"))?;
    Ok(Some(meta))
}

/// `bytes` with any metadata section removed and `meta` appended as a new one.
pub(crate) fn write(bytes: &[u8], meta: &Metadata) -> anyhow::Result<Vec<u8>> {
    let secs = sections(bytes)?;
    let mut out = Vec::with_capacity(bytes.len() + 512);
    out.extend_from_slice(&bytes[..8]);
    for s in &secs {
        if s.custom.is_some_and(|(name, _)| name == SECTION) {
            continue;
        }
        out.extend_from_slice(&bytes[s.start..s.end]);
    }
    let data = serde_json::to_vec(meta)?;
    let mut payload = Vec::with_capacity(data.len() + SECTION.len() + 8);
    write_leb_u32(&mut payload, SECTION.len() as u32);
    payload.extend_from_slice(SECTION.as_bytes());
    payload.extend_from_slice(&data);
    out.push(0);
    write_leb_u32(&mut out, u32::try_from(payload.len())?);
    out.extend_from_slice(&payload);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component: header only.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";

    #[test]
    fn round_trip_and_replace() {
        assert_eq!(is_component(EMPTY_COMPONENT), Some(true));
        assert_eq!(read(EMPTY_COMPONENT).unwrap(), None);
        let meta = Metadata {
            name: Some("x".into()),
            description: Some("d".repeat(300)),
            ..Default::default()
        };
        let once = write(EMPTY_COMPONENT, &meta).unwrap();
        assert_eq!(read(&once).unwrap(), Some(meta.clone()));
        let mut m2 = meta.clone();
        m2.merge(Metadata {
            version: Some("1.2.3".into()),
            ..Default::default()
        });
        let twice = write(&once, &m2).unwrap();
        let secs = sections(&twice).unwrap();
        assert_eq!(secs.len(), 1, "the old section is replaced");
        let back = read(&twice).unwrap().unwrap();
        assert_eq!(back.name.as_deref(), Some("x"));
        assert_eq!(back.version.as_deref(), Some("1.2.3"));
    }

    #[test]
    fn refuses_garbage() {
        assert!(sections(b"not wasm").is_err());
        assert!(sections(b"\0asm\x0d\x00\x01\x00\x00\x7f").is_err());
    }
}
