//! The scoring plane: `POST /inference/{endpoint}/score` with key, AML-token or AAD-token auth, routing
//! by traffic or the `azureml-model-deployment` header, and a deterministic chat-completion reply.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use crate::auth::{ML_AUDIENCE, bearer, verify};
use crate::endpoints::{model_label, pick_by_traffic};
use crate::http::{Req, json_response, with_header};
use crate::state::Shared;

/// Errors of the scoring plane: `{"error":{"code","message"}}` with the status.
fn fail(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    json_response(status, &json!({"error": {"code": code, "message": message.into()}}))
}

/// Routes `/inference/{endpoint}/...`.
pub(crate) fn handle(shared: &Arc<Shared>, req: &Req) -> Response {
    let endpoint = req.segs[1].clone();
    let action = req.lower.get(2).map(String::as_str);
    match (&req.method, action, req.lower.len()) {
        (&Method::POST, Some("score"), 3) => score(shared, req, &endpoint),
        (&Method::GET, Some("swagger.json"), 3) => swagger(shared, req, &endpoint),
        (_, Some("score") | Some("swagger.json"), 3) => fail(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{} is not supported here.", req.method),
        ),
        _ => fail(StatusCode::NOT_FOUND, "NotFound", format!("No scoring route '{}'.", req.path)),
    }
}

/// Checks the caller's credential against the endpoint's auth mode: the refusal, or `None` to go on.
fn authorize(shared: &Shared, req: &Req, endpoint: &crate::state::Endpoint) -> Option<Response> {
    let Some(token) = bearer(req) else {
        return Some(fail(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Authorization header is missing. Send 'Authorization: Bearer <key or token>'.",
        ));
    };
    let denied = |why: &str| fail(StatusCode::UNAUTHORIZED, "Unauthorized", why.to_string());
    match endpoint.auth_mode.as_str() {
        "Key" => {
            if token == endpoint.primary_key || token == endpoint.secondary_key {
                None
            } else {
                Some(denied("The key is not valid for this endpoint."))
            }
        }
        "AMLToken" => {
            let key = format!("{}/{}", endpoint.ws, endpoint.name.to_ascii_lowercase());
            match verify(shared, token) {
                Ok(claims)
                    if claims.typ == "amltoken" && claims.endpoint.as_deref() == Some(key.as_str()) =>
                {
                    None
                }
                Ok(_) => Some(denied("The token is not an AML token for this endpoint.")),
                Err(crate::auth::TokenError::Expired { .. }) => Some(denied("The token has expired.")),
                Err(_) => Some(denied("The token is not valid.")),
            }
        }
        _ => {
            let base = shared.https_url.to_ascii_lowercase();
            match verify(shared, token) {
                Ok(claims)
                    if claims.typ == "aad"
                        && [ML_AUDIENCE.to_string(), base]
                            .contains(&claims.aud.trim_end_matches('/').to_ascii_lowercase()) =>
                {
                    None
                }
                Ok(claims) => {
                    Some(denied(&format!("The token audience '{}' is not {ML_AUDIENCE}.", claims.aud)))
                }
                Err(crate::auth::TokenError::Expired { .. }) => Some(denied("The token has expired.")),
                Err(_) => Some(denied("The token is not valid.")),
            }
        }
    }
}

fn score(shared: &Arc<Shared>, req: &Req, name: &str) -> Response {
    let (deployment, model, endpoint_name) = {
        let world = shared.world();
        let Some(endpoint) = world.endpoint_any(name) else {
            return fail(
                StatusCode::NOT_FOUND,
                "EndpointNotFound",
                format!("Online endpoint '{name}' does not exist."),
            );
        };
        if let Some(response) = authorize(shared, req, endpoint) {
            return response;
        }
        let chosen = match req.header("azureml-model-deployment").filter(|h| !h.is_empty()) {
            Some(wanted) => match endpoint.deployments.iter().find(|d| d.name.eq_ignore_ascii_case(wanted)) {
                Some(d) => d,
                None => {
                    return fail(
                        StatusCode::NOT_FOUND,
                        "DeploymentNotFound",
                        format!("Deployment '{wanted}' does not exist in endpoint '{}'.", endpoint.name),
                    );
                }
            },
            None => {
                let picked = pick_by_traffic(&endpoint.traffic, &req.body);
                match picked.and_then(|p| endpoint.deployments.iter().find(|d| d.name == p)) {
                    Some(d) => d,
                    None => {
                        return fail(
                            StatusCode::FAILED_DEPENDENCY,
                            "NoValidDeployments",
                            "No valid deployments to route to. Please check that the endpoint has at least one \
                             deployment with positive weight values or use a deployment specific header to route.",
                        );
                    }
                }
            }
        };
        if chosen.prov.state != "Succeeded" {
            return fail(
                StatusCode::FAILED_DEPENDENCY,
                "DeploymentNotReady",
                format!(
                    "Deployment '{}' is not ready to serve (provisioningState {}).",
                    chosen.name, chosen.prov.state
                ),
            );
        }
        let model = model_label(chosen.properties.get("model").and_then(Value::as_str).unwrap_or(""));
        (chosen.name.clone(), model, endpoint.name.clone())
    };
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(err) => {
            return fail(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("The request body is not valid JSON: {err}."),
            );
        }
    };
    let reply = match chat_reply(&body, &deployment, &model) {
        Ok(text) => text,
        Err(message) => return fail(StatusCode::BAD_REQUEST, "BadRequest", message),
    };
    let response = json_response(StatusCode::OK, &json!({"output": reply}));
    let response = with_header(response, "azureml-model-deployment", &deployment);
    let response = with_header(response, "x-request-id", &uuid::Uuid::new_v4().to_string());
    with_header(response, "x-ms-endpoint-name", &endpoint_name)
}

/// Validates a chat-completion request in the notebook's format and composes a deterministic reply.
fn chat_reply(body: &Value, deployment: &str, model: &str) -> Result<String, String> {
    let input = body.get("input_data").ok_or("The request must have an 'input_data' object.")?;
    let messages = input
        .get("input_string")
        .and_then(Value::as_array)
        .ok_or("'input_data.input_string' must be a list of chat messages ({\"role\", \"content\"}).")?;
    if messages.is_empty() {
        return Err("'input_data.input_string' must contain at least one message.".into());
    }
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).ok_or(format!("Message {i} has no 'role'."))?;
        if !["system", "user", "assistant"].contains(&role) {
            return Err(format!("Message {i} has role '{role}'; expected system, user or assistant."));
        }
        m.get("content").and_then(Value::as_str).ok_or(format!("Message {i} has no text 'content'."))?;
    }
    let params = input.get("parameters").cloned().unwrap_or_else(|| json!({}));
    if !params.is_object() {
        return Err("'input_data.parameters' must be an object.".into());
    }
    for (key, lo, hi) in [("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)] {
        if let Some(v) = params.get(key)
            && !v.as_f64().is_some_and(|x| (lo..=hi).contains(&x))
        {
            return Err(format!("Parameter '{key}' must be a number from {lo} to {hi}; got {v}."));
        }
    }
    let max_tokens = match params.get("max_new_tokens") {
        None => 200,
        Some(v) => v
            .as_u64()
            .filter(|n| *n >= 1)
            .ok_or(format!("Parameter 'max_new_tokens' must be a positive integer; got {v}."))?
            as usize,
    };
    let question =
        messages.iter().rev().find(|m| m["role"] == "user").and_then(|m| m["content"].as_str()).unwrap_or("");
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{model}\n{question}").as_bytes());
    let tag: String = digest.as_ref()[..4].iter().map(|b| format!("{b:02x}")).collect();
    let topic: String = question.split_whitespace().take(12).collect::<Vec<_>>().join(" ");
    let text = format!(
        "This is a deterministic reply from the Azure ML emulator (deployment '{deployment}', model {model}, \
         reply {tag}). You asked: \"{topic}\". A fine-tuned chat model would answer here."
    );
    let words: Vec<&str> = text.split_whitespace().collect();
    Ok(words[..words.len().min(max_tokens)].join(" "))
}

fn swagger(shared: &Arc<Shared>, req: &Req, name: &str) -> Response {
    let world = shared.world();
    let Some(endpoint) = world.endpoint_any(name) else {
        return fail(
            StatusCode::NOT_FOUND,
            "EndpointNotFound",
            format!("Online endpoint '{name}' does not exist."),
        );
    };
    if let Some(response) = authorize(shared, req, endpoint) {
        return response;
    }
    json_response(
        StatusCode::OK,
        &json!({
            "openapi": "3.0.1",
            "info": {"title": "ML service", "version": "1.0"},
            "paths": {"/score": {"post": {
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {
                    "input_data": {"type": "object", "properties": {
                        "input_string": {"type": "array", "items": {"type": "object", "properties": {"role": {"type": "string"}, "content": {"type": "string"}}}},
                        "parameters": {"type": "object"},
                    }},
                    "params": {"type": "object"},
                }}}}},
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object", "properties": {"output": {"type": "string"}}}}}}},
            }}},
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same request gets the same reply; a bad body gets a message naming the problem.
    #[test]
    fn chat_reply_is_deterministic_and_validates() {
        let body = json!({"input_data": {"input_string": [{"role": "user", "content": "What is Azure ML?"}], "parameters": {"temperature": 0.6, "top_p": 0.9, "do_sample": true, "max_new_tokens": 200}}, "params": {}});
        let a = chat_reply(&body, "demo", "m:1").unwrap();
        assert_eq!(a, chat_reply(&body, "demo", "m:1").unwrap());
        assert!(a.contains("What is Azure ML?"));
        assert!(chat_reply(&json!({"input_data": {}}), "demo", "m").unwrap_err().contains("input_string"));
        assert!(
            chat_reply(
                &json!({"input_data": {"input_string": [{"role": "robot", "content": "x"}]}}),
                "d",
                "m"
            )
            .unwrap_err()
            .contains("robot")
        );
        let short = json!({"input_data": {"input_string": [{"role": "user", "content": "hi"}], "parameters": {"max_new_tokens": 3}}});
        assert_eq!(chat_reply(&short, "d", "m").unwrap().split_whitespace().count(), 3);
    }
}
