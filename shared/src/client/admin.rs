//! The routes of users, tokens, providers and model configs (the admin API),
//! and `/models` and `/users/me`.

use reqwest::Method;

use super::{Client, ClientError};
use crate::{
    api::{
        CreateModelConfig, CreateProvider, CreateToken, CreateUser, ModelConfig, ModelList,
        Provider, Token, TokenCreated, UpdateModelConfig, UpdateProvider, User,
    },
    ids::{ModelConfigId, ProviderId, TokenId, UserId},
};

impl Client {
    /// `GET /models`: the models the caller can pick.
    pub async fn list_models(&self) -> Result<ModelList, ClientError> {
        self.fetch(self.route(Method::GET, "models")?).await
    }

    /// `GET /users/me`: the caller.
    pub async fn me(&self) -> Result<User, ClientError> {
        self.fetch(self.route(Method::GET, "users/me")?).await
    }

    /// `GET /admin/providers`.
    pub async fn list_providers(&self) -> Result<Vec<Provider>, ClientError> {
        self.fetch(self.route(Method::GET, "admin/providers")?)
            .await
    }

    /// `POST /admin/providers`.
    pub async fn create_provider(
        &self,
        provider: &CreateProvider,
    ) -> Result<Provider, ClientError> {
        let request = self.route(Method::POST, "admin/providers")?;
        self.fetch(request.json(provider)).await
    }

    /// `GET /admin/providers/{id}`.
    pub async fn get_provider(&self, provider_id: ProviderId) -> Result<Provider, ClientError> {
        let path = format!("admin/providers/{provider_id}");
        self.fetch(self.route(Method::GET, &path)?).await
    }

    /// `PATCH /admin/providers/{id}`.
    pub async fn update_provider(
        &self,
        provider_id: ProviderId,
        update: &UpdateProvider,
    ) -> Result<Provider, ClientError> {
        let path = format!("admin/providers/{provider_id}");
        self.fetch(self.route(Method::PATCH, &path)?.json(update))
            .await
    }

    /// `DELETE /admin/providers/{id}`.
    pub async fn delete_provider(&self, provider_id: ProviderId) -> Result<(), ClientError> {
        let path = format!("admin/providers/{provider_id}");
        self.call_empty(self.route(Method::DELETE, &path)?).await
    }

    /// `GET /admin/mcp-servers`.
    pub async fn list_mcp_servers(&self) -> Result<crate::api::McpServerList, ClientError> {
        self.fetch(self.route(Method::GET, "admin/mcp-servers")?)
            .await
    }

    /// `POST /admin/mcp-servers`.
    pub async fn create_mcp_server(
        &self,
        server: &crate::api::CreateMcpServer,
    ) -> Result<crate::api::McpServer, ClientError> {
        let request = self.route(Method::POST, "admin/mcp-servers")?;
        self.fetch(request.json(server)).await
    }

    /// `GET /admin/mcp-servers/{id}/tools`: what the server offers now.
    pub async fn list_mcp_server_tools(
        &self,
        server_id: crate::ids::McpServerId,
    ) -> Result<crate::api::McpServerTools, ClientError> {
        let path = format!("admin/mcp-servers/{server_id}/tools");
        self.fetch(self.route(Method::GET, &path)?).await
    }

    /// `PATCH /admin/mcp-servers/{id}`.
    pub async fn update_mcp_server(
        &self,
        server_id: crate::ids::McpServerId,
        update: &crate::api::UpdateMcpServer,
    ) -> Result<crate::api::McpServer, ClientError> {
        let path = format!("admin/mcp-servers/{server_id}");
        self.fetch(self.route(Method::PATCH, &path)?.json(update))
            .await
    }

    /// `DELETE /admin/mcp-servers/{id}`.
    pub async fn delete_mcp_server(
        &self,
        server_id: crate::ids::McpServerId,
    ) -> Result<(), ClientError> {
        let path = format!("admin/mcp-servers/{server_id}");
        self.call_empty(self.route(Method::DELETE, &path)?).await
    }

    /// `GET /admin/model-configs`.
    pub async fn list_model_configs(&self) -> Result<Vec<ModelConfig>, ClientError> {
        self.fetch(self.route(Method::GET, "admin/model-configs")?)
            .await
    }

    /// `POST /admin/model-configs`.
    pub async fn create_model_config(
        &self,
        config: &CreateModelConfig,
    ) -> Result<ModelConfig, ClientError> {
        let request = self.route(Method::POST, "admin/model-configs")?;
        self.fetch(request.json(config)).await
    }

    /// `GET /admin/model-configs/{id}`.
    pub async fn get_model_config(
        &self,
        config_id: ModelConfigId,
    ) -> Result<ModelConfig, ClientError> {
        let path = format!("admin/model-configs/{config_id}");
        self.fetch(self.route(Method::GET, &path)?).await
    }

    /// `PATCH /admin/model-configs/{id}`.
    pub async fn update_model_config(
        &self,
        config_id: ModelConfigId,
        update: &UpdateModelConfig,
    ) -> Result<ModelConfig, ClientError> {
        let path = format!("admin/model-configs/{config_id}");
        self.fetch(self.route(Method::PATCH, &path)?.json(update))
            .await
    }

    /// `DELETE /admin/model-configs/{id}`.
    pub async fn delete_model_config(&self, config_id: ModelConfigId) -> Result<(), ClientError> {
        let path = format!("admin/model-configs/{config_id}");
        self.call_empty(self.route(Method::DELETE, &path)?).await
    }

    /// `GET /admin/users`.
    pub async fn list_users(&self) -> Result<Vec<User>, ClientError> {
        self.fetch(self.route(Method::GET, "admin/users")?).await
    }

    /// `POST /admin/users` (201).
    pub async fn create_user(&self, user: &CreateUser) -> Result<User, ClientError> {
        let request = self.route(Method::POST, "admin/users")?;
        self.fetch(request.json(user)).await
    }

    /// `GET /admin/users/{id}`.
    pub async fn get_user(&self, user_id: UserId) -> Result<User, ClientError> {
        self.fetch(self.route(Method::GET, &format!("admin/users/{user_id}"))?)
            .await
    }

    /// `GET /admin/users/{id}/tokens`: the user's tokens, never their secrets.
    pub async fn list_tokens(&self, user_id: UserId) -> Result<Vec<Token>, ClientError> {
        let path = format!("admin/users/{user_id}/tokens");
        self.fetch(self.route(Method::GET, &path)?).await
    }

    /// `POST /admin/users/{id}/tokens` (201): the answer holds the secret,
    /// which is never shown again.
    pub async fn create_token(
        &self,
        user_id: UserId,
        token: &CreateToken,
    ) -> Result<TokenCreated, ClientError> {
        let path = format!("admin/users/{user_id}/tokens");
        self.fetch(self.route(Method::POST, &path)?.json(token))
            .await
    }

    /// `DELETE /admin/users/{id}/tokens/{token_id}`: revokes the token.
    pub async fn revoke_token(
        &self,
        user_id: UserId,
        token_id: TokenId,
    ) -> Result<(), ClientError> {
        let path = format!("admin/users/{user_id}/tokens/{token_id}");
        self.call_empty(self.route(Method::DELETE, &path)?).await
    }
}
