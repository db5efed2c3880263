//! `loupe services` and `loupe points SERVICE`: what can be inspected.

use loupe_proto::v1::{AgentMode, ListPointsRequest, ListServicesRequest, PointKind};
use serde_json::json;

use super::{Context, enum_label};
use crate::error::CliError;
use crate::exit;
use crate::when::format_unix;

fn mode_label(mode: i32) -> String {
    AgentMode::try_from(mode).map_or_else(
        |_| format!("mode-{mode}"),
        |m| enum_label(m.as_str_name(), "AGENT_MODE_"),
    )
}

/// `loupe services`: one row per live instance.
pub async fn services(context: &Context) -> Result<u8, CliError> {
    let mut connection = context.connect().await?;
    let response = connection
        .client
        .list_services(ListServicesRequest {})
        .await
        .map_err(|s| connection.error(&s))?
        .into_inner();
    let mut rows = Vec::new();
    let mut values = Vec::new();
    for service in &response.services {
        let instances: Vec<_> = service
            .instances
            .iter()
            .map(|i| {
                rows.push(vec![
                    service.name.clone(),
                    i.instance.clone(),
                    mode_label(i.mode),
                    i.version.clone(),
                    i.address.clone(),
                    format_unix(i.lease_expires_unix),
                ]);
                json!({
                    "instance": i.instance,
                    "address": i.address,
                    "version": i.version,
                    "mode": mode_label(i.mode),
                    "registered_unix": i.registered_unix,
                    "lease_expires_unix": i.lease_expires_unix,
                })
            })
            .collect();
        if service.instances.is_empty() {
            rows.push(vec![
                service.name.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        values.push(json!({ "name": service.name, "instances": instances }));
    }
    context.output.list(
        &[
            "SERVICE",
            "INSTANCE",
            "MODE",
            "VERSION",
            "ADDRESS",
            "LEASE UNTIL",
        ],
        rows,
        values,
    )?;
    Ok(exit::OK)
}

/// `loupe points SERVICE`: its points, and whose approval a session on each needs.
pub async fn points(context: &Context, service: &str) -> Result<u8, CliError> {
    let mut connection = context.connect().await?;
    let response = connection
        .client
        .list_points(ListPointsRequest {
            service: service.to_owned(),
        })
        .await
        .map_err(|s| connection.error(&s))?
        .into_inner();
    let mut rows = Vec::new();
    let mut values = Vec::new();
    for listed in &response.points {
        let Some(point) = &listed.point else { continue };
        let kind = PointKind::try_from(point.kind).map_or_else(
            |_| format!("kind-{}", point.kind),
            |k| enum_label(k.as_str_name(), "POINT_KIND_"),
        );
        let fields: Vec<String> = point.fields.iter().map(|f| f.name.clone()).collect();
        let locations: Vec<String> = point
            .locations
            .iter()
            .map(|l| format!("{}:{}", l.file, l.line))
            .collect();
        let approval = if listed.approval_from.is_empty() {
            "-".to_owned()
        } else {
            listed.approval_from.join(", ")
        };
        rows.push(vec![
            point.name.clone(),
            kind.clone(),
            listed.instances.to_string(),
            approval,
            fields.join(", "),
            locations.first().cloned().unwrap_or_default(),
        ]);
        values.push(json!({
            "name": point.name,
            "kind": kind,
            "instances": listed.instances,
            "approval_from": listed.approval_from,
            "fields": point.fields.iter().map(|f| json!({"name": f.name, "type": f.r#type})).collect::<Vec<_>>(),
            "locations": locations,
        }));
    }
    context.output.list(
        &[
            "POINT",
            "KIND",
            "INSTANCES",
            "APPROVAL FROM",
            "FIELDS",
            "SOURCE",
        ],
        rows,
        values,
    )?;
    Ok(exit::OK)
}
