//! Registry discovery and the registry data plane (`/mferp/managementfrontend/...`): models, model
//! versions, components and component versions of system registries such as `azureml`.

use std::sync::Arc;

use axum::http::Method;
use axum::response::Response;
use serde_json::{Value, json};

use crate::auth::require_arm;
use crate::http::{ApiError, Req, method_not_allowed, ok, page, respond, system_data};
use crate::state::{Registry, RegistryComponent, RegistryModel, Shared};
use crate::validate;

/// `GET /registrymanagement/v1.0/registries/{name}/discovery`.
pub(crate) fn discovery(shared: &Arc<Shared>, req: &Req) -> Response {
    respond((|| {
        require_arm(shared, req)?;
        if req.method != Method::GET {
            return Err(method_not_allowed(req));
        }
        let name = &req.segs[3];
        let world = shared.world();
        let registry = world.registry(name).ok_or_else(|| {
            ApiError::not_found(format!("Registry '{name}' was not found.")).target("registryName")
        })?;
        Ok(ok(&json!({
            "registryName": registry.name,
            "tenantId": world.tenant_id,
            "primaryRegion": registry.location,
            "regions": [registry.location],
            "subscriptionId": registry.subscription,
            "resourceGroup": registry.resource_group,
            "workspaceName": null,
            "primaryRegionResourceProviderUri": format!("{}/", shared.https_url),
        })))
    })())
}

/// Routes the registry data plane.
pub(crate) fn handle(shared: &Arc<Shared>, req: &Req) -> Response {
    respond(route(shared, req))
}

fn route(shared: &Arc<Shared>, req: &Req) -> Result<Response, ApiError> {
    require_arm(shared, req)?;
    let l: Vec<&str> = req.lower.iter().map(String::as_str).collect();
    let s: Vec<&str> = req.segs.iter().map(String::as_str).collect();
    let [
        _,
        _,
        "subscriptions",
        _,
        "resourcegroups",
        _,
        "providers",
        "microsoft.machinelearningservices",
        "registries",
        _,
        rest @ ..,
    ] = l.as_slice()
    else {
        return Err(ApiError::not_found(format!("No route for '{}'.", req.path)));
    };
    validate::api_version(req)?;
    if req.method != Method::GET {
        return Err(method_not_allowed(req));
    }
    let (sub, rg, reg) = (s[3], s[5], s[9]);
    let world = shared.world();
    let registry = world
        .registry(reg)
        .filter(|r| r.subscription.eq_ignore_ascii_case(sub) && r.resource_group.eq_ignore_ascii_case(rg))
        .ok_or_else(|| {
            ApiError::not_found(format!("Registry '{reg}' was not found in resource group '{rg}'."))
        })?;
    let arm_base = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.MachineLearningServices/registries/{}",
        registry.subscription, registry.resource_group, registry.name
    );
    let name = s.get(11).copied().unwrap_or("");
    match rest {
        ["models"] => {
            let items = registry.models.iter().map(|m| model_container(&arm_base, m)).collect();
            Ok(ok(&page(req, items)))
        }
        ["models", _] => Ok(ok(&model_container(&arm_base, find_model(registry, name)?))),
        ["models", _, "versions"] => {
            let model = find_model(registry, name)?;
            let view = list_view(req)?;
            let mut versions: Vec<_> = model
                .versions
                .iter()
                .filter(|v| view.keeps(v.archived || model.archived))
                .filter(|v| req.q("version").is_none_or(|want| want == v.version))
                .collect();
            order(req, &mut versions, |v| (v.created, v.version.clone()))?;
            let items = versions.into_iter().map(|v| model_version(registry, model, v)).collect();
            Ok(ok(&page(req, items)))
        }
        ["models", _, "versions", _] => {
            let model = find_model(registry, name)?;
            let version = s[13];
            let v = model.versions.iter().find(|v| v.version == version).ok_or_else(|| {
                ApiError::not_found(format!(
                    "Model {name}:{version} not found in registry {}.",
                    registry.name
                ))
            })?;
            Ok(ok(&model_version(registry, model, v)))
        }
        ["components"] => {
            let items = registry.components.iter().map(|c| component_container(&arm_base, c)).collect();
            Ok(ok(&page(req, items)))
        }
        ["components", _] => Ok(ok(&component_container(&arm_base, find_component(registry, name)?))),
        ["components", _, "versions"] => {
            let component = find_component(registry, name)?;
            let view = list_view(req)?;
            let mut versions: Vec<_> = component.versions.iter().filter(|v| view.keeps(v.archived)).collect();
            order(req, &mut versions, |v| (v.created, v.version.clone()))?;
            let items = versions.into_iter().map(|v| component_version(registry, component, v)).collect();
            Ok(ok(&page(req, items)))
        }
        ["components", _, "versions", _] => {
            let component = find_component(registry, name)?;
            let version = s[13];
            let v = component.versions.iter().find(|v| v.version == version).ok_or_else(|| {
                ApiError::not_found(format!(
                    "Component {name}:{version} not found in registry {}.",
                    registry.name
                ))
            })?;
            Ok(ok(&component_version(registry, component, v)))
        }
        _ => Err(ApiError::not_found(format!("No route for '{}'.", req.path))),
    }
}

fn find_model<'a>(registry: &'a Registry, name: &str) -> Result<&'a RegistryModel, ApiError> {
    registry.models.iter().find(|m| m.name.eq_ignore_ascii_case(name)).ok_or_else(|| {
        ApiError::not_found(format!(
            "Model container with name: {name} not found in registry {}.",
            registry.name
        ))
    })
}

fn find_component<'a>(registry: &'a Registry, name: &str) -> Result<&'a RegistryComponent, ApiError> {
    registry.components.iter().find(|c| c.name.eq_ignore_ascii_case(name)).ok_or_else(|| {
        ApiError::not_found(format!(
            "Component container with name: {name} not found in registry {}.",
            registry.name
        ))
    })
}

#[derive(Clone, Copy)]
enum View {
    Active,
    Archived,
    All,
}

impl View {
    fn keeps(self, archived: bool) -> bool {
        match self {
            View::Active => !archived,
            View::Archived => archived,
            View::All => true,
        }
    }
}

fn list_view(req: &Req) -> Result<View, ApiError> {
    match req.q("listViewType").map(str::to_ascii_lowercase).as_deref() {
        None | Some("activeonly") => Ok(View::Active),
        Some("archivedonly") => Ok(View::Archived),
        Some("all") => Ok(View::All),
        Some(other) => Err(ApiError::validation(
            "listViewType",
            "InvalidEnumValue",
            format!(
                "The value '{other}' is not valid for listViewType. Valid values: ActiveOnly, ArchivedOnly, All."
            ),
        )),
    }
}

/// Sorts by `$orderBy` (`createdtime desc|asc`, `version desc|asc`); newest first by default.
fn order<T>(
    req: &Req,
    items: &mut [&T],
    key: impl Fn(&T) -> (jiff::Timestamp, String),
) -> Result<(), ApiError> {
    let spec = req.q("$orderBy").unwrap_or("createdtime desc").to_ascii_lowercase();
    let mut words = spec.split_whitespace();
    let field = words.next().unwrap_or("createdtime");
    let desc = !matches!(words.next(), Some("asc"));
    match field {
        "createdtime" | "createdat" => items.sort_by_key(|i| key(i).0),
        "version" => items.sort_by(|a, b| version_cmp(&key(a).1, &key(b).1)),
        other => {
            return Err(ApiError::validation(
                "$orderBy",
                "InvalidOrderBy",
                format!("Unsupported $orderBy field '{other}'. Supported: createdtime, version."),
            ));
        }
    }
    if desc {
        items.reverse();
    }
    Ok(())
}

/// Compares versions numerically part by part when they are numbers (`0.0.9` < `0.0.10`).
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |v: &str| v.split('.').map(|p| p.parse::<u64>().ok()).collect::<Option<Vec<_>>>();
    match (parts(a), parts(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

fn model_container(arm_base: &str, model: &RegistryModel) -> Value {
    let latest = model.versions.iter().max_by_key(|v| v.created);
    let next = model
        .versions
        .iter()
        .filter_map(|v| v.version.parse::<u64>().ok())
        .max()
        .map(|n| (n + 1).to_string());
    let created = model.versions.iter().map(|v| v.created).min().unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let modified = latest.map_or(created, |v| v.created);
    json!({
        "id": format!("{arm_base}/models/{}", model.name),
        "name": model.name,
        "type": "Microsoft.MachineLearningServices/registries/models",
        "properties": {
            "description": model.description,
            "tags": model.tags,
            "properties": {},
            "isArchived": model.archived,
            "latestVersion": latest.map(|v| v.version.clone()),
            "nextVersion": next,
            "provisioningState": "Succeeded",
        },
        "systemData": system_data(created, modified, "azureml"),
    })
}

fn model_version(
    registry: &Registry,
    model: &RegistryModel,
    v: &crate::state::RegistryModelVersion,
) -> Value {
    json!({
        "id": format!("azureml://registries/{}/models/{}/versions/{}", registry.name, model.name, v.version),
        "name": v.version,
        "type": "Microsoft.MachineLearningServices/registries/models/versions",
        "properties": {
            "description": v.description,
            "tags": v.tags,
            "properties": v.properties,
            "isArchived": v.archived || model.archived,
            "isAnonymous": false,
            "modelType": v.model_type,
            "modelUri": format!("azureml://registries/{}/models/{}/versions/{}", registry.name, model.name, v.version),
            "flavors": v.flavors,
            "jobName": null,
            "stage": if v.archived || model.archived { "Archived" } else { "Production" },
            "provisioningState": "Succeeded",
        },
        "systemData": system_data(v.created, v.created, "azureml"),
    })
}

fn component_container(arm_base: &str, component: &RegistryComponent) -> Value {
    let latest = component.versions.iter().max_by_key(|v| v.created);
    let created = component.versions.iter().map(|v| v.created).min().unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    json!({
        "id": format!("{arm_base}/components/{}", component.name),
        "name": component.name,
        "type": "Microsoft.MachineLearningServices/registries/components",
        "properties": {
            "description": component.description,
            "tags": {},
            "properties": {},
            "isArchived": false,
            "latestVersion": latest.map(|v| v.version.clone()),
            "provisioningState": "Succeeded",
        },
        "systemData": system_data(created, latest.map_or(created, |v| v.created), "azureml"),
    })
}

fn component_version(
    registry: &Registry,
    component: &RegistryComponent,
    v: &crate::state::RegistryComponentVersion,
) -> Value {
    json!({
        "id": format!("azureml://registries/{}/components/{}/versions/{}", registry.name, component.name, v.version),
        "name": v.version,
        "type": "Microsoft.MachineLearningServices/registries/components/versions",
        "properties": {
            "description": component.description,
            "tags": {},
            "properties": {},
            "isArchived": v.archived,
            "isAnonymous": false,
            "componentSpec": v.spec,
            "provisioningState": "Succeeded",
        },
        "systemData": system_data(v.created, v.created, "azureml"),
    })
}

/// Looks up a registry component version by its asset id
/// (`azureml://registries/{reg}/components/{name}/versions/{v}`), returning its spec.
pub(crate) fn component_spec(world: &crate::state::World, asset_id: &str) -> Option<Value> {
    let rest = asset_id.strip_prefix("azureml://registries/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [reg, "components", name, "versions", version] = parts.as_slice() else { return None };
    let registry = world.registry(reg)?;
    let component = registry.components.iter().find(|c| c.name.eq_ignore_ascii_case(name))?;
    component.versions.iter().find(|v| v.version == *version).map(|v| v.spec.clone())
}

/// Whether a registry model version exists for an asset id
/// (`azureml://registries/{reg}/models/{name}/versions/{v}`).
pub(crate) fn model_exists(world: &crate::state::World, asset_id: &str) -> Option<bool> {
    let rest = asset_id.strip_prefix("azureml://registries/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [reg, "models", name, "versions", version] = parts.as_slice() else { return None };
    Some(world.registry(reg).is_some_and(|r| {
        r.models
            .iter()
            .any(|m| m.name.eq_ignore_ascii_case(name) && m.versions.iter().any(|v| v.version == *version))
    }))
}
