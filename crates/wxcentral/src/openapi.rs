//! The OpenAPI document, generated from the handlers so it cannot drift from the code.

use crate::api;
use crate::error::{ErrorBody, ErrorDetail};
use crate::platform;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(title = "wxcentral", description = "WeChat credential central-control server"),
    paths(
        api::list_apps,
        api::get_credential,
        api::refresh_credential,
        api::jssdk_config,
        api::healthz,
        api::readyz,
        api::metrics,
        api::root,
        api::put_app,
        api::put_apps,
        api::delete_app,
        platform::push,
        platform::landing,
        platform::create_authorization_url,
        platform::create_authorization,
        platform::list_authorizers,
        platform::import,
        platform::component_token,
        platform::component_status,
    ),
    components(schemas(
        api::CredentialResponse,
        api::RootResponse,
        api::PutAppRequest,
        api::PutAppsRequest,
        api::PutAppsItem,
        api::PutAppsResponse,
        api::RefreshRequest,
        api::JssdkConfigRequest,
        api::JssdkConfigResponse,
        api::AppsResponse,
        api::AppView,
        api::CredentialStatusView,
        platform::AuthorizationUrlRequest,
        platform::AuthorizationUrlResponse,
        platform::AuthorizationRequest,
        platform::AuthorizationResponse,
        platform::AuthorizersResponse,
        platform::AuthorizerView,
                wxcentral_core::ImportReport,
        platform::ComponentView,
        wxcentral_core::authorizer::AuthorizerState,
        ErrorBody,
        ErrorDetail,
    )),
    modifiers(&BearerAuth)
)]
#[derive(Debug)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("client key")).build(),
            ),
        );
    }
}

/// The document as served at `/openapi.json` and committed at `docs/openapi.json`.
pub fn document() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_else(|_| "{}".into())
}
