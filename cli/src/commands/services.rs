//! `loupe services` and `loupe points SERVICE`: what can be inspected. Both follow the
//! control plane's pages until the listing is complete, so the output is the whole list.

use loupe_proto::v1::{
    AgentMode, ListPointsRequest, ListServicesRequest, ListedPoint, PointKind, ServiceInfo,
};
use serde_json::json;

use super::{Context, enum_label, next_page};
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
    let mut listed: Vec<ServiceInfo> = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = connection
            .client
            .list_services(ListServicesRequest {
                page_size: 0,
                page_token: page_token.clone(),
            })
            .await
            .map_err(|s| connection.error(&s))?
            .into_inner();
        // A service's instances may continue on the next page.
        for service in page.services {
            match listed.last_mut() {
                Some(last) if last.name == service.name => last.instances.extend(service.instances),
                _ => listed.push(service),
            }
        }
        match next_page(&page_token, page.next_page_token)? {
            Some(next) => page_token = next,
            None => break,
        }
    }
    let mut rows = Vec::new();
    let mut values = Vec::new();
    for service in &listed {
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
    let mut points: Vec<ListedPoint> = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = connection
            .client
            .list_points(ListPointsRequest {
                service: service.to_owned(),
                page_size: 0,
                page_token: page_token.clone(),
            })
            .await
            .map_err(|s| connection.error(&s))?
            .into_inner();
        points.extend(page.points);
        match next_page(&page_token, page.next_page_token)? {
            Some(next) => page_token = next,
            None => break,
        }
    }
    let mut rows = Vec::new();
    let mut values = Vec::new();
    for listed in &points {
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
