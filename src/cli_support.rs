//! Small helpers shared by the CLI and the engine's logs.

use base64::Engine;

/// Text when it is UTF-8, `{"b64": …}` otherwise (the same convention as the fixtures).
pub fn arg_json(a: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(a) {
        Ok(s) => serde_json::Value::String(s.to_string()),
        Err(_) => serde_json::json!({"b64": base64::engine::general_purpose::STANDARD.encode(a)}),
    }
}
