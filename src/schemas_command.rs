//! `campaign-connector schemas`: each record schema's name, fingerprints, single-object
//! header and canonical form, and for a topic in the Confluent encoding what the registry
//! holds under its subject.

use std::path::PathBuf;

use anyhow::{Context, Result};
use campaign_connector::codec::{hex, SchemaIdentity, SubjectLookupError, SubjectReport};
use campaign_connector::runtime::config::Settings;

/// Each topic role's record schema (this build's), by role.
fn role_schemas() -> Result<Vec<(&'static str, &'static str, SchemaIdentity)>> {
    use campaign_connector::model::*;
    Ok(vec![
        (
            "interactions",
            "interaction.avsc",
            SchemaIdentity::of::<Interaction>()?,
        ),
        (
            "user_events",
            "user_event.avsc",
            SchemaIdentity::of::<UserEvent>()?,
        ),
        (
            "campaigns",
            "campaign.avsc",
            SchemaIdentity::of::<Campaign>()?,
        ),
        (
            "send_commands",
            "send_command.avsc",
            SchemaIdentity::of::<SendCommand>()?,
        ),
        (
            "decisions",
            "decision.avsc",
            SchemaIdentity::of::<Decision>()?,
        ),
        (
            "changelog",
            "task_state.avsc",
            SchemaIdentity::of::<TaskStateRecord>()?,
        ),
        (
            "shadow",
            "shadow_record.avsc",
            SchemaIdentity::of::<ShadowRecord>()?,
        ),
    ])
}

/// The topic of a role, if it is on (the decision log can be turned off).
fn role_topic<'a>(settings: &'a Settings, role: &str) -> Option<&'a str> {
    let t = &settings.topics;
    match role {
        "interactions" => Some(&t.interactions),
        "user_events" => Some(&t.user_events),
        "campaigns" => Some(&t.campaigns),
        "send_commands" => Some(&t.send_commands),
        "decisions" => settings.decisions_topic(),
        "changelog" => Some(&t.changelog),
        "shadow" => Some(&t.shadow),
        _ => None,
    }
}

/// One schema as `schemas` describes it: where it comes from, its identity, and — when its
/// record is a topic's — that topic and, in the confluent encoding, what the registry holds.
pub(crate) struct Described {
    pub(crate) source: String,
    pub(crate) schema: SchemaIdentity,
    pub(crate) topic: Option<TopicOf>,
}

pub(crate) struct TopicOf {
    pub(crate) role: &'static str,
    pub(crate) name: String,
    pub(crate) format: campaign_connector::codec::Format,
    /// `None` unless the topic's encoding is confluent; the error is always a
    /// [`SubjectLookupError::Registry`].
    pub(crate) registry: Option<Result<SubjectReport, SubjectLookupError>>,
}

/// Describes this build's schemas (no files) or the given files; a file whose record is a
/// topic role's (same full name) is compared with that topic's registry subject too.
pub(crate) fn describe_schemas(files: &[PathBuf], settings: &Settings) -> Result<Vec<Described>> {
    let roles = role_schemas()?;
    let schemas: Vec<(String, SchemaIdentity)> = if files.is_empty() {
        roles
            .iter()
            .map(|(_, file, s)| (format!("this build's schema (schemas/{file})"), s.clone()))
            .collect()
    } else {
        files
            .iter()
            .map(|f| Ok((f.display().to_string(), SchemaIdentity::of_file(f)?)))
            .collect::<Result<_>>()?
    };
    let mut described = Vec::with_capacity(schemas.len());
    for (source, schema) in schemas {
        let role = roles
            .iter()
            .find(|(_, _, own)| own.name == schema.name)
            .map(|(role, _, _)| *role);
        let topic = match role.and_then(|r| Some((r, role_topic(settings, r)?))) {
            None => None,
            Some((role, name)) => {
                let encoding = settings
                    .encoding(role)
                    .validate()
                    .with_context(|| format!("encoding of {role}"))?;
                let registry =
                    match campaign_connector::codec::lookup_subject(name, &encoding, &schema) {
                        Ok(report) => report.map(Ok),
                        Err(e @ SubjectLookupError::Registry { .. }) => Some(Err(e)),
                        Err(e @ SubjectLookupError::Setup(_)) => {
                            return Err(anyhow::Error::new(e).context(format!("encoding of {role}")))
                        }
                    };
                Some(TopicOf {
                    role,
                    name: name.to_string(),
                    format: encoding.encoding.format(),
                    registry,
                })
            }
        };
        described.push(Described {
            source,
            schema,
            topic,
        });
    }
    Ok(described)
}

pub(crate) fn render_schema(d: &Described) -> String {
    let s = &d.schema;
    let mut text = format!(
        "{}\n  source          {}\n  fingerprint     {} (0x{:016x})\n  header          {}\n",
        s.name,
        d.source,
        s.fingerprint as i64,
        s.fingerprint,
        hex(&s.single_object_header()),
    );
    if s.legacy_fingerprint != s.fingerprint {
        text.push_str(&format!(
            "  legacy          {} (0x{:016x}), read but no longer written\n",
            s.legacy_fingerprint as i64, s.legacy_fingerprint
        ));
    }
    if let Some(topic) = &d.topic {
        text.push_str(&format!(
            "  topic           {} ({}, format {})\n",
            topic.name, topic.role, topic.format
        ));
        match &topic.registry {
            None => {}
            Some(Err(e)) => {
                if let SubjectLookupError::Registry {
                    registry_url,
                    subject,
                    ..
                } = e
                {
                    text.push_str(&format!("  subject         {subject} at {registry_url}\n"));
                }
                text.push_str(&format!("  registered      unknown: {e}\n"));
            }
            Some(Ok(report)) => {
                text.push_str(&format!(
                    "  subject         {} at {}\n  registered      {}\n",
                    report.subject,
                    report.registry_url,
                    registered_text(report)
                ));
            }
        }
    }
    text.push_str(&format!("  canonical form  {}\n\n", s.canonical_form));
    text
}

/// The ids and versions of the schema under the subject, or plainly why there are none.
fn registered_text(report: &SubjectReport) -> String {
    let Some(versions) = &report.versions else {
        return format!("no: the registry has no subject {}", report.subject);
    };
    let matching: Vec<String> = report
        .matching()
        .map(|v| format!("id {} (version {})", v.id, v.version))
        .collect();
    if !matching.is_empty() {
        return matching.join(", ");
    }
    if versions.is_empty() {
        return format!("no: subject {} has no versions", report.subject);
    }
    let others: Vec<String> = versions
        .iter()
        .map(|v| match (v.fingerprint, &v.unusable) {
            (Some(fp), _) => format!(
                "version {}: id {}, fingerprint {} (0x{fp:016x})",
                v.version, v.id, fp as i64
            ),
            (None, why) => format!(
                "version {}: id {}, {}",
                v.version,
                v.id,
                why.as_deref().unwrap_or("no fingerprint")
            ),
        })
        .collect();
    format!(
        "no: none of the {} versions of subject {} is this schema ({})",
        versions.len(),
        report.subject,
        others.join("; ")
    )
}

pub(crate) fn schema_json(d: &Described) -> serde_json::Value {
    let s = &d.schema;
    let topic = d.topic.as_ref().map(|t| {
        serde_json::json!({
            "role": t.role,
            "name": t.name,
            "format": t.format.to_string(),
        })
    });
    let registry = d
        .topic
        .as_ref()
        .and_then(|t| t.registry.as_ref())
        .map(|r| match r {
            Err(e) => {
                let (url, subject) = match e {
                    SubjectLookupError::Registry {
                        registry_url,
                        subject,
                        ..
                    } => (Some(registry_url), Some(subject)),
                    SubjectLookupError::Setup(_) => (None, None),
                };
                serde_json::json!({
                    "status": "error",
                    "url": url,
                    "subject": subject,
                    "error": e.to_string(),
                })
            }
            Ok(report) => {
                let status = match &report.versions {
                    None => "subject_not_found",
                    Some(_) if report.matching().next().is_some() => "registered",
                    Some(_) => "no_matching_version",
                };
                let versions: Vec<_> = report
                    .versions
                    .iter()
                    .flatten()
                    .map(|v| {
                        serde_json::json!({
                            "version": v.version,
                            "id": v.id,
                            "fingerprint": v.fingerprint.map(|fp| fp as i64),
                            "fingerprint_hex": v.fingerprint.map(|fp| format!("{fp:016x}")),
                            "unusable": v.unusable,
                            "matches": v.matches,
                        })
                    })
                    .collect();
                let matches: Vec<_> = report
                    .matching()
                    .map(|v| serde_json::json!({ "id": v.id, "version": v.version }))
                    .collect();
                serde_json::json!({
                    "status": status,
                    "url": report.registry_url,
                    "subject": report.subject,
                    "matches": matches,
                    "versions": versions,
                })
            }
        });
    serde_json::json!({
        "name": s.name,
        "source": d.source,
        "fingerprint": s.fingerprint as i64,
        "fingerprint_hex": format!("{:016x}", s.fingerprint),
        "single_object_header": hex(&s.single_object_header()),
        "legacy_fingerprint": s.legacy_fingerprint as i64,
        "legacy_fingerprint_hex": format!("{:016x}", s.legacy_fingerprint),
        "canonical_form": s.canonical_form,
        "topic": topic,
        "registry": registry,
    })
}
