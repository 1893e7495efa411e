//! The vocabulary of tools beyond the built-in ones (ARCHITECTURE.md §17): a tool a
//! chat's client runs ([`ClientTool`]), where a recorded call runs
//! ([`RunsOn`]), and how tool names are spelled.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A tool the chat's client runs: offered to the model like any other; a
/// call to it makes the chat `requires_action` until the client posts its
/// result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientTool {
    /// Its name, as the model sees it: letters, digits, `_` and `-`, at most
    /// 64, without `__` (which namespaces MCP tools).
    #[schema(schema_with = name_schema)]
    pub name: String,
    /// What it does, for the model.
    #[schema(schema_with = description_schema)]
    pub description: String,
    /// JSON Schema of its arguments (an object schema; default: any object).
    #[serde(default = "any_object")]
    #[schema(value_type = Object)]
    pub parameters: Value,
    /// Seconds the client has to answer a call (default 300, at most 86,400).
    #[serde(
        default,
        deserialize_with = "crate::api::optional_whole",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = timeout_schema)]
    pub timeout_s: Option<u32>,
}

/// The pattern of a client tool's name (see [`check_client_tools`]): no
/// `__` anywhere, so every `_` is followed by another character or ends it.
const NAME_PATTERN: &str = "^(?:_?[A-Za-z0-9-])*_?$";

/// The most characters of a client tool's description.
pub const MAX_CLIENT_TOOL_DESCRIPTION: usize = 4096;

/// The pattern of an MCP server's name: lowercase letters, digits, `-`
/// and `_`, starting with a letter or digit, without `__` (at most 32).
const SERVER_NAME_PATTERN: &str = "^[a-z0-9](?:_?[a-z0-9-])*_?$";

/// Schema of an MCP server's name (the server checks the same rule).
pub fn mcp_server_name_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .pattern(Some(SERVER_NAME_PATTERN))
        .max_length(Some(32))
        .build()
}

/// Schema of a chat's `mcp_servers` (names of servers that must exist, or
/// `null` for none).
pub fn mcp_servers_schema() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            utoipa::openapi::Type::Array,
            utoipa::openapi::Type::Null,
        ]))
        .items(mcp_server_name_schema())
        .build()
}

fn name_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .pattern(Some(NAME_PATTERN))
        .min_length(Some(1))
        .max_length(Some(64))
        .build()
}

fn description_schema() -> utoipa::openapi::Object {
    crate::api::schema::text(Some(MAX_CLIENT_TOOL_DESCRIPTION)).build()
}

fn timeout_schema() -> utoipa::openapi::Object {
    crate::api::schema::or_null(
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::Integer)
            .minimum(Some(1))
            .maximum(Some(MAX_CLIENT_TOOL_TIMEOUT_S)),
    )
}

/// Client tools a chat may declare at most.
pub const MAX_CLIENT_TOOLS: usize = 32;

/// How long a client has to answer a call when its tool says nothing.
pub const DEFAULT_CLIENT_TOOL_TIMEOUT_S: u32 = 300;

/// The longest a client tool may ask for.
pub const MAX_CLIENT_TOOL_TIMEOUT_S: u32 = 86_400;

fn any_object() -> Value {
    serde_json::json!({"type": "object"})
}

impl ClientTool {
    /// Seconds the client has to answer a call of this tool.
    pub fn timeout_s(&self) -> u32 {
        self.timeout_s.unwrap_or(DEFAULT_CLIENT_TOOL_TIMEOUT_S)
    }
}

/// True for a name a model may call: 1–64 of `[A-Za-z0-9_-]` (what every
/// provider accepts).
pub fn is_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The separator of an MCP tool's name as the model sees it: `server__tool`.
pub const MCP_SEPARATOR: &str = "__";

/// Checks a chat's client tools: valid, distinct names without `__`, object
/// schemas, timeouts in range, at most [`MAX_CLIENT_TOOLS`]. The sentence
/// says what is wrong.
pub fn check_client_tools(tools: &[ClientTool]) -> Result<(), String> {
    if tools.len() > MAX_CLIENT_TOOLS {
        return Err(format!(
            "a chat declares at most {MAX_CLIENT_TOOLS} client tools"
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for tool in tools {
        if !is_tool_name(&tool.name) || tool.name.contains(MCP_SEPARATOR) {
            return Err(format!(
                "client tool name {:?} must be 1-64 letters, digits, _ or -, without __",
                tool.name
            ));
        }
        if !seen.insert(tool.name.as_str()) {
            return Err(format!("client tool {:?} is declared twice", tool.name));
        }
        if tool.description.chars().count() > MAX_CLIENT_TOOL_DESCRIPTION {
            return Err(format!(
                "the description of client tool {:?} has more than {MAX_CLIENT_TOOL_DESCRIPTION} characters",
                tool.name
            ));
        }
        if !tool.parameters.is_object() {
            return Err(format!(
                "the parameters of client tool {:?} must be a JSON Schema object",
                tool.name
            ));
        }
        if tool
            .timeout_s
            .is_some_and(|t| t == 0 || t > MAX_CLIENT_TOOL_TIMEOUT_S)
        {
            return Err(format!(
                "timeout_s of client tool {:?} must be 1-{MAX_CLIENT_TOOL_TIMEOUT_S}",
                tool.name
            ));
        }
    }
    Ok(())
}

/// Where a recorded tool call runs, and so what its missing result means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunsOn {
    /// On the replica running the turn (built-in and MCP tools): a missing
    /// result after a crash means it may have run.
    Replica,
    /// On the client: the chat is `requires_action` until its result comes.
    Client,
    /// A wait for subagents (`wait_agent`): the chat is `waiting_on_agents`
    /// until they finish.
    Agents,
}

impl RunsOn {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Replica => "replica",
            Self::Client => "client",
            Self::Agents => "agents",
        }
    }

    /// The value of a database spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "replica" => Some(Self::Replica),
            "client" => Some(Self::Client),
            "agents" => Some(Self::Agents),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool(name: &str) -> ClientTool {
        ClientTool {
            name: name.into(),
            description: "d".into(),
            parameters: json!({"type": "object"}),
            timeout_s: None,
        }
    }

    #[test]
    fn client_tools_are_checked() {
        assert!(check_client_tools(&[tool("pick_file"), tool("open-url")]).is_ok());
        assert!(
            check_client_tools(&[tool("a__b")]).is_err(),
            "MCP separator"
        );
        assert!(check_client_tools(&[tool("has space")]).is_err());
        assert!(check_client_tools(&[tool("")]).is_err());
        assert!(
            check_client_tools(&[tool("x"), tool("x")]).is_err(),
            "twice"
        );
        let mut bad = tool("x");
        bad.parameters = json!("string");
        assert!(check_client_tools(&[bad]).is_err());
        let mut slow = tool("x");
        slow.timeout_s = Some(0);
        assert!(check_client_tools(&[slow]).is_err());
        let parsed: ClientTool =
            serde_json::from_value(json!({"name": "n", "description": "d"})).unwrap();
        assert_eq!(parsed.parameters, json!({"type": "object"}));
        assert_eq!(parsed.timeout_s(), DEFAULT_CLIENT_TOOL_TIMEOUT_S);
    }
}
