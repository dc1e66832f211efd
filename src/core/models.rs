//! `GET /v1/models`: the models the configuration offers, in OpenAI's list format. Aliases
//! (`auto`, `fast`, `slow`, ...) are owned by the router; concrete ids by their first provider.

use serde::Serialize;

use super::config::Config;

#[derive(Serialize)]
struct List<'a> {
    object: &'static str,
    data: Vec<Model<'a>>,
}

#[derive(Serialize)]
struct Model<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'a str,
}

/// The JSON body of `GET /v1/models`.
pub fn list_json(config: &Config) -> String {
    let data = config
        .model_names()
        .iter()
        .map(|name| Model {
            id: name,
            object: "model",
            created: 0,
            owned_by: if config.is_alias(name) {
                "edge-router"
            } else {
                config
                    .targets(name)
                    .and_then(|t| t.first())
                    .and_then(|t| config.providers.get(t.provider))
                    .map_or("edge-router", |p| p.name.as_str())
            },
        })
        .collect();
    serde_json::to_string(&List {
        object: "list",
        data,
    })
    .unwrap_or_else(|_| r#"{"object":"list","data":[]}"#.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn lists_aliases_then_concrete_models() {
        let doc = json!({
            "providers": {"groq": {"keys": [{"id": "g", "secret": "G"}]},
                          "together": {"keys": [{"id": "t", "secret": "T"}]}},
            "routes": {"fast": ["groq/llama-3.1-8b-instant"], "slow": ["together/meta/x"]}
        });
        let c = Config::parse(&doc.to_string(), |_| None).unwrap();
        let v: Value = serde_json::from_str(&list_json(&c)).unwrap();
        assert_eq!(v["object"], "list");
        let ids: Vec<(&str, &str)> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["id"].as_str().unwrap(), m["owned_by"].as_str().unwrap()))
            .collect();
        assert_eq!(
            ids,
            [
                ("auto", "edge-router"),
                ("fast", "edge-router"),
                ("slow", "edge-router"),
                ("llama-3.1-8b-instant", "groq"),
                ("meta/x", "together")
            ]
        );
        assert_eq!(v["data"][0]["object"], "model");
    }
}
