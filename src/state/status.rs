//! The original processing status, field for field.
//!
//! `GET /api/llm/processing-status/{id}` answers [`StatusResponse`]; the
//! `processing_status` message carries [`ProcessingStatus`] as its `data`.
//! Start times are Unix seconds as floats, `null` when idle.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::model::SessionId;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProcessingStatus {
    pub session_id: SessionId,
    pub summary_processing: bool,
    pub mind_map_processing: bool,
    pub any_processing: bool,
    pub summary_start_time: Option<f64>,
    pub mind_map_start_time: Option<f64>,
    /// Every other defined operation, after the original fields:
    /// `{name}_processing` and `{name}_start_time`.
    #[serde(flatten)]
    #[schema(schema_with = other_operations_schema)]
    pub others: OtherOperations,
}

/// The operations besides the original two, each with its start time
/// (`None` when idle), in the registry's order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OtherOperations(pub Vec<(crate::model::Operation, Option<f64>)>);

impl Serialize for OtherOperations {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len() * 2))?;
        for (op, start) in &self.0 {
            map.serialize_entry(&format!("{op}_processing"), &start.is_some())?;
            map.serialize_entry(&format!("{op}_start_time"), start)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for OtherOperations {
    /// From the fields left over beside the original ones: each
    /// `{name}_start_time`, in the order written (`{name}_processing` says
    /// the same again).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let fields = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let mut others = Vec::new();
        for (key, value) in fields {
            let Some(name) = key.strip_suffix("_start_time") else {
                continue;
            };
            let op = crate::model::Operation::named(name).map_err(serde::de::Error::custom)?;
            let start = match value {
                serde_json::Value::Null => None,
                value => Some(value.as_f64().ok_or_else(|| {
                    serde::de::Error::custom(format!("{key} is not a time: {value}"))
                })?),
            };
            others.push((op, start));
        }
        Ok(Self(others))
    }
}

/// Nothing the document can list: the names are the server's.
fn other_operations_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Object)
        .description(Some(
            "For every operation of the config file, `{name}_processing` (boolean) and \
             `{name}_start_time` (Unix seconds, or null when idle)",
        ))
        .build()
}

/// The HTTP answer: `{"success": true, ...status}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusResponse {
    pub success: bool,
    #[serde(flatten)]
    pub status: ProcessingStatus,
}

impl ProcessingStatus {
    /// The status of a session with nothing in flight (also: unknown sessions).
    pub fn idle(session_id: SessionId) -> Self {
        Self {
            session_id,
            summary_processing: false,
            mind_map_processing: false,
            any_processing: false,
            summary_start_time: None,
            mind_map_start_time: None,
            others: OtherOperations(
                crate::ops::registry()
                    .ops()
                    .filter(|op| !crate::ops::BUILT_IN.contains(op))
                    .map(|op| (op, None))
                    .collect(),
            ),
        }
    }

    pub fn into_response(self) -> StatusResponse {
        StatusResponse {
            success: true,
            status: self,
        }
    }
}

/// Unix seconds as a float, as the original system's `time.time()` gives it.
pub fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
