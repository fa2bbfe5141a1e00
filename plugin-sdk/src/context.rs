//! The context a plugin is sent, parsed on first read.

use serde::Serialize;
use serde_json::Value;

/// The context a task or gate is sent, parsed from its JSON text the first time it is read.
///
/// It reads as a [`serde_json::Value`] (`req.context["run"]["id"]`,
/// `req.context.get("phases")`, `&req.context` where a `&Value` is expected) and serialises as
/// one. Most tasks never look at the context, and parsing it costs a trivial task a large share
/// of its time in the guest, so it is parsed only on demand. Text that is not JSON reads as
/// `null`.
#[derive(Clone, Default)]
pub struct Context {
    text: String,
    value: std::cell::OnceCell<Value>,
}

impl Context {
    /// A context from its JSON text (parsed when first read).
    pub fn new(text: impl Into<String>) -> Self {
        Context {
            text: text.into(),
            value: std::cell::OnceCell::new(),
        }
    }

    /// The JSON text exactly as the host sent it.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The parsed context.
    pub fn value(&self) -> &Value {
        self.value
            .get_or_init(|| serde_json::from_str(&self.text).unwrap_or(Value::Null))
    }

    /// The parsed context, owned.
    pub fn into_value(self) -> Value {
        self.value();
        self.value.into_inner().unwrap_or_default()
    }
}

impl std::ops::Deref for Context {
    type Target = Value;

    fn deref(&self) -> &Value {
        self.value()
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.value().fmt(f)
    }
}

impl PartialEq<Value> for Context {
    fn eq(&self, other: &Value) -> bool {
        self.value() == other
    }
}

impl From<Context> for Value {
    fn from(context: Context) -> Value {
        context.into_value()
    }
}

impl Serialize for Context {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        self.value().serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_context_is_parsed_only_when_read_and_then_once() {
        let context = Context::new(r#"{"run": {"id": "r1"}, "pipeline": {"name": "p"}}"#);
        assert!(context.value.get().is_none(), "parsed before being read");
        assert_eq!(
            context.text(),
            r#"{"run": {"id": "r1"}, "pipeline": {"name": "p"}}"#
        );
        assert!(context.value.get().is_none(), "reading the text parsed it");
        assert_eq!(context["run"]["id"], "r1");
        assert!(context.value.get().is_some());
        assert_eq!(context.get("pipeline"), Some(&json!({"name": "p"})));
        let as_value: &Value = &context;
        assert_eq!(as_value["pipeline"]["name"], "p");
    }

    #[test]
    fn the_context_serialises_and_converts_as_its_value() {
        let text = r#"{"phases":{"a":{"tasks":{"t":{"status":"succeeded"}}}}}"#;
        let context = Context::new(text);
        assert_eq!(
            json!({ "context": context.clone() })["context"],
            json!(serde_json::from_str::<Value>(text).unwrap())
        );
        assert_eq!(serde_json::to_string(&context).unwrap(), text);
        assert!(context == serde_json::from_str::<Value>(text).unwrap());
        // Owned, whether or not it was read before.
        assert_eq!(
            Value::from(context.clone())["phases"]["a"]["tasks"]["t"]["status"],
            "succeeded"
        );
        let _ = context.value();
        assert_eq!(
            context.into_value()["phases"]["a"]["tasks"]["t"]["status"],
            "succeeded"
        );
    }

    #[test]
    fn a_context_that_is_not_json_reads_as_null() {
        let context = Context::new("not json");
        assert!(context.is_null());
        assert_eq!(context.text(), "not json");
        assert_eq!(Context::default().into_value(), Value::Null);
    }
}
