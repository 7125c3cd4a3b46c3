//! Resources and prompts (`--items N`), for the benchmark's `resources/read` and
//! `prompts/get` rows and for tests: N text resources `test://doc/<i>` (one page),
//! the template `test://doc/{id}`, and the prompt `greet` (argument `name`).

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::rpc::{INVALID_PARAMS, Reply};

/// `resources/list`: `page_size` resources a page (every one without it); the
/// cursor is the next offset.
pub fn resources_list(count: usize, page_size: Option<usize>, params: Option<&RawValue>) -> Reply {
    #[derive(Deserialize)]
    struct Params {
        cursor: Option<String>,
    }
    let cursor = params
        .and_then(|p| serde_json::from_str::<Params>(p.get()).ok())
        .and_then(|p| p.cursor);
    let start = match cursor.map(|c| c.parse::<usize>()) {
        None => 0,
        Some(Ok(n)) if n <= count => n,
        Some(_) => return Reply::error(INVALID_PARAMS, "Invalid cursor"),
    };
    let end = page_size.map_or(count, |n| (start + n).min(count));
    let resources: Vec<Value> = (start..end)
        .map(|i| json!({"uri": format!("test://doc/{i}"), "name": format!("doc-{i}"), "mimeType": "text/plain"}))
        .collect();
    let mut result = json!({ "resources": resources });
    if end < count {
        result["nextCursor"] = json!(end.to_string());
    }
    Reply::Result(result.to_string())
}

/// `resources/templates/list`.
pub fn templates_list() -> Reply {
    let templates =
        [json!({"uriTemplate": "test://doc/{id}", "name": "doc", "mimeType": "text/plain"})];
    Reply::Result(json!({ "resourceTemplates": templates }).to_string())
}

/// `resources/read` of `test://doc/<anything>`: a short text naming it.
pub fn resources_read(params: Option<&RawValue>) -> Reply {
    #[derive(Deserialize)]
    struct Params {
        uri: String,
    }
    let Some(p) = params.and_then(|p| serde_json::from_str::<Params>(p.get()).ok()) else {
        return Reply::error(INVALID_PARAMS, "Invalid params: uri");
    };
    let Some(id) = p.uri.strip_prefix("test://doc/") else {
        return Reply::error(-32002, "Resource not found");
    };
    let contents =
        [json!({"uri": p.uri, "mimeType": "text/plain", "text": format!("document {id}")})];
    Reply::Result(json!({ "contents": contents }).to_string())
}

/// `prompts/list`: the one prompt.
pub fn prompts_list() -> Reply {
    let prompts = [json!({
        "name": "greet",
        "description": "Greets someone",
        "arguments": [{"name": "name", "required": true}]
    })];
    Reply::Result(json!({ "prompts": prompts }).to_string())
}

/// `prompts/get greet`: one user message with the name.
pub fn prompts_get(params: Option<&RawValue>) -> Reply {
    #[derive(Deserialize)]
    struct Params {
        name: String,
        #[serde(default)]
        arguments: Option<serde_json::Map<String, Value>>,
    }
    let Some(p) = params.and_then(|p| serde_json::from_str::<Params>(p.get()).ok()) else {
        return Reply::error(INVALID_PARAMS, "Invalid params: name");
    };
    if p.name != "greet" {
        return Reply::error(INVALID_PARAMS, "Prompt not found");
    }
    let who = p
        .arguments
        .as_ref()
        .and_then(|a| a.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("stranger");
    let messages =
        [json!({"role": "user", "content": {"type": "text", "text": format!("Hello, {who}!")}})];
    Reply::Result(json!({ "messages": messages }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(cursor: Option<&str>) -> Value {
        let params =
            cursor.map(|c| serde_json::value::to_raw_value(&json!({ "cursor": c })).unwrap());
        match resources_list(25, Some(10), params.as_deref()) {
            Reply::Result(text) => serde_json::from_str(&text).unwrap(),
            _ => panic!("a result"),
        }
    }

    #[test]
    fn resources_come_in_pages_with_a_cursor() {
        let first = page(None);
        assert_eq!(first["resources"].as_array().unwrap().len(), 10);
        assert_eq!(first["nextCursor"], "10");
        let last = page(Some("20"));
        assert_eq!(last["resources"].as_array().unwrap().len(), 5);
        assert!(last.get("nextCursor").is_none());
    }
}
