//! The tools of one chat's run: the built-in ones, the agent tools (for a
//! top-level chat), the tools of the MCP servers it opted into, and the
//! tools its client runs. [`ChatToolset::route`] says where a call goes and
//! what the ledger records of it.

use std::sync::Arc;

use chatd_shared::{
    db::tool_calls::NewCall,
    tools::{ClientTool, MCP_SEPARATOR, RunsOn},
};

use super::{
    Call, Outcome, ToolRegistry,
    mcp::{McpTool, McpTools},
};
use crate::{
    agents::{self, AgentContext},
    llm::ToolSpec,
};

/// Where a call goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// A built-in tool (or an unknown name, which fails as such).
    Builtin,
    /// `spawn_agent`, `message_agent`, `close_agent`.
    Agent,
    /// `wait_agent`: the run may end waiting for subagents.
    WaitAgents,
    /// A tool of an MCP server the chat opted into.
    Mcp(McpTool),
    /// A tool the chat's client runs, with its timeout.
    Client(ClientTool),
}

/// One run's tools.
pub struct ChatToolset {
    builtin: ToolRegistry,
    agents: AgentContext,
    mcp: Option<Arc<McpTools>>,
    mcp_tools: Vec<McpTool>,
    client: Vec<ClientTool>,
}

impl ChatToolset {
    /// The tools of the chat `agents` acts for: the MCP servers' lists come
    /// from the replica's cache (fetched on a miss).
    pub async fn new(
        builtin: ToolRegistry,
        agents: AgentContext,
        mcp: Option<Arc<McpTools>>,
        mcp_servers: &[String],
        client: Vec<ClientTool>,
    ) -> Self {
        let mcp_tools = match &mcp {
            Some(mcp) if !mcp_servers.is_empty() => mcp.offered(mcp_servers).await,
            _ => Vec::new(),
        };
        Self {
            builtin,
            agents,
            mcp,
            mcp_tools,
            client,
        }
    }

    /// The agent tools of this run.
    pub fn agents(&self) -> &AgentContext {
        &self.agents
    }

    /// What the model is offered, in a stable order.
    pub fn specs(&self) -> Vec<ToolSpec> {
        let mut specs = self.builtin.specs();
        if self.agents.offered() {
            specs.extend(agents::specs());
        }
        specs.extend(self.mcp_tools.iter().map(|tool| tool.spec.clone()));
        specs.extend(self.client.iter().map(|tool| ToolSpec {
            name: tool.name.clone(),
            description: tool.description.clone(),
            parameters: tool.parameters.clone(),
        }));
        specs
    }

    /// Where a call to `name` goes. Agent tool names route to the agent
    /// tools even for a subagent, which then answer with an error.
    pub fn route(&self, name: &str) -> Route {
        if self.builtin.has(name) {
            return Route::Builtin;
        }
        if name == agents::WAIT {
            return Route::WaitAgents;
        }
        if agents::NAMES.contains(&name) {
            return Route::Agent;
        }
        if let Some(tool) = self.client.iter().find(|tool| tool.name == name) {
            return Route::Client(tool.clone());
        }
        if let Some(tool) = self.mcp_tools.iter().find(|tool| tool.spec.name == name) {
            return Route::Mcp(tool.clone());
        }
        if let Some((server, tool)) = name.split_once(MCP_SEPARATOR) {
            // Not offered (the server was unreachable when the run began, or
            // the model made it up): calling it says which.
            return Route::Mcp(McpTool {
                server: server.to_owned(),
                tool: tool.to_owned(),
                spec: ToolSpec {
                    name: name.to_owned(),
                    description: String::new(),
                    parameters: serde_json::json!({}),
                },
                idempotent: false,
            });
        }
        Route::Builtin
    }

    /// What the ledger records of `call`, before it runs.
    pub fn record_of(&self, call: &Call, route: &Route) -> NewCall {
        let (runs_on, idempotent) = match route {
            Route::Builtin => (RunsOn::Replica, self.builtin.idempotent(&call.name)),
            // Spawning and messaging act on other chats; closing twice is harmless.
            Route::Agent => (RunsOn::Replica, call.name == agents::CLOSE),
            Route::WaitAgents => (RunsOn::Agents, true),
            Route::Mcp(tool) => (RunsOn::Replica, tool.idempotent),
            Route::Client(_) => (RunsOn::Client, false),
        };
        NewCall {
            call_id: call.id.clone(),
            tool: call.name.clone(),
            args: call.args.clone(),
            runs_on,
            idempotent,
            waits_on: None,
        }
    }

    /// Runs a call that runs on the replica (built-in, agent or MCP tool);
    /// every failure is an error result. Dropping the future abandons it.
    pub async fn run(&self, call: &Call, route: &Route) -> Outcome {
        match route {
            Route::Builtin => self.builtin.run(call).await,
            Route::Agent => self.agents.run(&call.name, &call.args).await,
            Route::Mcp(tool) => match &self.mcp {
                Some(mcp) if self.mcp_tools.contains(tool) => {
                    mcp.call(&tool.server, &tool.tool, &call.args).await
                }
                Some(_) => Outcome::error(format!(
                    "{} is not among this chat's tools (its MCP server is not opted into, or was unavailable when the turn began)",
                    call.name
                )),
                None => Outcome::error(format!("unknown tool {:?}", call.name)),
            },
            Route::WaitAgents | Route::Client(_) => {
                Outcome::error(format!("{} does not run on the replica", call.name))
            }
        }
    }
}
