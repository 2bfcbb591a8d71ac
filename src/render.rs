//! `pilotfish render`: exactly what one proxy would receive, in the shape of Envoy's
//! `/config_dump`, from a directory of config — to see a change before applying it, and for
//! golden tests.

use std::path::Path;

use serde_json::{Value, json};

use crate::debug::json::{JsonError, any_to_json};
use crate::diagnostic::Diagnostic;
use crate::model::{MeshConfig, Proxy};
use crate::source::watch;
use crate::xds::resource::version_of;
use crate::xds::{ProxyResources, Snapshot, TypeUrl};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Read(#[from] watch::WatchError),
    #[error(transparent)]
    Json(#[from] JsonError),
}

/// Reads `dir` and renders the config of `proxy`, with the diagnostics of the directory.
pub fn render_dir(
    dir: &Path,
    proxy: &Proxy,
    mesh: &MeshConfig,
) -> Result<(Value, Vec<Diagnostic>), RenderError> {
    let (snapshot, mut diagnostics) = watch::read_once(dir)?;
    let context = crate::push::build(&snapshot, mesh, None);
    diagnostics.extend(context.index().diagnostics.iter().cloned());
    let resources = context.resources_for(proxy);
    Ok((config_dump(&resources)?, diagnostics))
}

/// The resources as Envoy's admin `/config_dump?include_eds` lays them out.
pub fn config_dump(resources: &ProxyResources) -> Result<Value, JsonError> {
    let section = |ty: TypeUrl,
                   dump_type: &str,
                   list: &str,
                   wrap: &dyn Fn(&str, Value) -> Value|
     -> Result<Value, JsonError> {
        let map = resources.get(ty);
        let version = version_of(map.values());
        let items = map
            .values()
            .map(|r| Ok(wrap(&version, any_to_json(&r.any)?)))
            .collect::<Result<Vec<_>, JsonError>>()?;
        Ok(
            json!({ "@type": format!("type.googleapis.com/envoy.admin.v3.{dump_type}"), list: items }),
        )
    };
    Ok(json!({ "configs": [
        section(TypeUrl::Cluster, "ClustersConfigDump", "dynamic_active_clusters",
            &|v, c| json!({"version_info": v, "cluster": c}))?,
        section(TypeUrl::Listener, "ListenersConfigDump", "dynamic_listeners",
            &|v, l| json!({"name": l["name"].clone(), "active_state": {"version_info": v, "listener": l}}))?,
        section(TypeUrl::RouteConfiguration, "RoutesConfigDump", "dynamic_route_configs",
            &|v, r| json!({"version_info": v, "route_config": r}))?,
        section(TypeUrl::ClusterLoadAssignment, "EndpointsConfigDump", "dynamic_endpoint_configs",
            &|v, e| json!({"version_info": v, "endpoint_config": e}))?,
    ]}))
}
