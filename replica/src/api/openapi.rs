//! The OpenAPI document (`/api/v1/openapi.json`): what the handlers'
//! annotations say, plus what every route shares, stated once here.
//!
//! Handlers declare the statuses their own logic returns (404, 409, 422,
//! 429 …). The statuses that come from the layers around them are added by
//! [`complete`] from the shape of each operation, so a new route cannot
//! forget them: 401 where a token is needed, 403 on admin routes, 400 where
//! a path, query or body is parsed, 413 and 415 where a body is read, 503
//! everywhere. It also adds the rules of request bodies that involve
//! several fields ([`chatd_shared::api::body_rules`]).

use utoipa::{
    Modify, OpenApi,
    openapi::{
        self, AllOfBuilder, Components, RefOr, ResponseBuilder, Schema,
        path::Operation,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use chatd_shared::api::{ErrorResponse, SpendLimitExceeded};

/// The document's frame; paths and schemas come from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(title = "chatd", description = "AI agent chats on a cluster of stateless replicas coordinated through PostgreSQL."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(ErrorResponse, SpendLimitExceeded))
)]
pub(super) struct ApiDoc;

/// The one security scheme: `Authorization: Bearer chatd_…`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("chatd_…")
                    .description(Some(
                        "An API token (`chatd_` and 32 letters and digits), created by an \
                         admin with `POST /admin/users/{id}/tokens` or `chatd token`.",
                    ))
                    .build(),
            ),
        );
    }
}

/// A response every route of some shape can give, described once.
struct Shared {
    /// The status.
    status: &'static str,
    /// Its name under `components/responses`.
    name: &'static str,
    /// When it happens.
    description: &'static str,
    /// Whether an operation can give it.
    applies: fn(&Shape) -> bool,
}

/// What about an operation decides which shared responses it can give.
struct Shape {
    /// It needs a token.
    secured: bool,
    /// Only admins may call it (the `admin` tag: every such handler takes
    /// an `Admin`).
    admin: bool,
    /// It has path, query or header parameters.
    parameters: bool,
    /// It reads a JSON body.
    body: bool,
}

const SHARED: [Shared; 6] = [
    Shared {
        status: "400",
        name: "BadRequest",
        description: "The request does not parse: a path id or query parameter of the wrong \
                      form, an unknown query parameter, malformed JSON, a body field of the \
                      wrong type or one the request does not have (`invalid_path`, \
                      `invalid_query`, `malformed_json`, `invalid_body`)",
        applies: |shape| shape.parameters || shape.body,
    },
    Shared {
        status: "401",
        name: "Unauthorized",
        description: "No token, or one that is malformed, unknown, revoked or expired \
                      (`unauthorized`)",
        applies: |shape| shape.secured,
    },
    Shared {
        status: "403",
        name: "Forbidden",
        description: "The token is valid but not an admin's (`forbidden`)",
        applies: |shape| shape.admin,
    },
    Shared {
        status: "413",
        name: "PayloadTooLarge",
        description: "The body is larger than the limit, 1 MiB by default (`payload_too_large`)",
        applies: |shape| shape.body,
    },
    Shared {
        status: "415",
        name: "UnsupportedMediaType",
        description: "The body is not sent as `Content-Type: application/json` \
                      (`unsupported_media_type`)",
        applies: |shape| shape.body,
    },
    Shared {
        status: "503",
        name: "Unavailable",
        description: "The database cannot be reached, the request took too long, or this \
                      replica is shutting down; try again, on another replica if need be \
                      (`unavailable`)",
        applies: |_| true,
    },
];

/// `document` with what the handlers' annotations cannot say (see the
/// module comment).
pub(super) fn complete(mut document: openapi::OpenApi) -> openapi::OpenApi {
    shared_responses(&mut document);
    body_rules(&mut document);
    document
}

/// Adds the responses every route of its shape shares: described once
/// under `components/responses`, referred to by each operation that does
/// not describe that status itself.
fn shared_responses(document: &mut openapi::OpenApi) {
    let secured_by_default = document
        .security
        .as_ref()
        .is_some_and(|requirements| !requirements.is_empty());
    let components = document.components.get_or_insert_with(Components::default);
    for shared in &SHARED {
        components.responses.insert(
            shared.name.to_owned(),
            RefOr::T(error_response(shared.description)),
        );
    }
    for item in document.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            let shape = shape(operation, secured_by_default);
            for shared in SHARED.iter().filter(|shared| (shared.applies)(&shape)) {
                operation
                    .responses
                    .responses
                    .entry(shared.status.to_owned())
                    .or_insert_with(|| RefOr::Ref(openapi::Ref::from_response_name(shared.name)));
            }
        }
    }
}

/// States each multi-field rule of a request body beside the body's schema.
fn body_rules(document: &mut openapi::OpenApi) {
    let components = document.components.get_or_insert_with(Components::default);
    for (name, rule) in chatd_shared::api::body_rules() {
        let Some(body) = components.schemas.remove(&name) else {
            continue;
        };
        let description = match &body {
            RefOr::T(Schema::Object(object)) => object.description.clone(),
            _ => None,
        };
        let combined = AllOfBuilder::new()
            .description(description)
            .item(body)
            .item(rule)
            .build();
        components
            .schemas
            .insert(name, RefOr::T(Schema::AllOf(combined)));
    }
}

fn shape(operation: &Operation, secured_by_default: bool) -> Shape {
    Shape {
        secured: operation
            .security
            .as_ref()
            .map_or(secured_by_default, |requirements| !requirements.is_empty()),
        admin: operation.tags.iter().flatten().any(|tag| tag == "admin"),
        // Every parameter is parsed (ids, numbers, cursors, idempotency keys),
        // so every one can be refused.
        parameters: operation
            .parameters
            .as_ref()
            .is_some_and(|parameters| !parameters.is_empty()),
        body: operation.request_body.is_some(),
    }
}

/// A response with the JSON error body.
fn error_response(description: &str) -> openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            openapi::ContentBuilder::new()
                .schema(Some(openapi::Ref::from_schema_name("ErrorResponse")))
                .build(),
        )
        .build()
}
