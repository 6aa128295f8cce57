//! Operational webhooks: posthorn's own events about endpoints and deliveries.
//!
//! A notice is stored as an ordinary event, in the same transaction as the change it
//! tells of, and delivered like any other (signed, retried, logged) to the endpoints
//! subscribed to its name by name: in the org it concerns, and in the operator org
//! (`POSTHORN_OPERATOR_ORG`), which hears of every org's endpoints. Three rules keep it
//! from looping or flooding: a notice never goes to the endpoint it is about; an
//! endpoint that takes every event (no subscriptions) is not sent notices; and a
//! delivery that carries a notice never causes a `delivery.failed`.

use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};

use super::event_type::{envelope, EventTypeRef};
use super::{EndpointId, EndpointUid, OrgId, Timestamp};

pub const ENDPOINT_CREATED: &str = "endpoint.created";
pub const ENDPOINT_UPDATED: &str = "endpoint.updated";
pub const ENDPOINT_DELETED: &str = "endpoint.deleted";
pub const ENDPOINT_ENABLED: &str = "endpoint.enabled";
pub const ENDPOINT_DISABLED: &str = "endpoint.disabled";
pub const ENDPOINT_RECOVERED: &str = "endpoint.recovered";
pub const DELIVERY_FAILED: &str = "delivery.failed";

/// Every operational event name: subscribable by name, never published by a client
/// nor taken as a custom event type's name.
pub const OPERATIONAL: &[&str] = &[
    ENDPOINT_CREATED,
    ENDPOINT_UPDATED,
    ENDPOINT_DELETED,
    ENDPOINT_ENABLED,
    ENDPOINT_DISABLED,
    ENDPOINT_RECOVERED,
    DELIVERY_FAILED,
];

pub fn is_operational(name: &str) -> bool {
    OPERATIONAL.contains(&name)
}

/// The endpoint a notice is about, as its `data` names it.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub org: &'a OrgId,
    pub uid: EndpointUid,
    pub url: &'a str,
}

/// What a delivery that finally failed carried and how its last attempt ended.
#[derive(Debug, Clone)]
pub struct FailedDelivery<'a> {
    /// Its public spelling (`dlv_...`, see `PublicIds`).
    pub delivery_id: String,
    pub event_id: &'a str,
    pub event_name: &'a str,
    pub attempts: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<&'a str>,
}

/// One operational event, ready to store: the envelope every delivery of it sends. Each
/// org it is stored in gives it an event id of its own.
#[derive(Debug, Clone)]
pub struct Notice {
    pub name: &'static str,
    /// The org it concerns; also stored, when one is set, in the operator org.
    pub org: OrgId,
    /// Never delivered to this endpoint.
    pub subject: EndpointUid,
    pub body: Bytes,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Common<'a> {
    org_id: &'a str,
    endpoint_id: String,
    url: &'a str,
    at: Timestamp,
}

impl Notice {
    fn new(name: &'static str, subject: &Subject<'_>, at: Timestamp, extra: Value) -> Self {
        let common = Common {
            org_id: subject.org.as_str(),
            endpoint_id: EndpointId::for_url(subject.url).as_str().to_owned(),
            url: subject.url,
            at,
        };
        let mut data = serde_json::to_value(common).unwrap_or_default();
        if let (Some(data), Value::Object(extra)) = (data.as_object_mut(), extra) {
            data.extend(extra);
        }
        // Serialising a `Value` of strings and numbers cannot fail.
        let body = envelope(name, 1, &data).unwrap_or_default();
        Self {
            name,
            org: subject.org.clone(),
            subject: subject.uid,
            body: body.into(),
        }
    }

    /// `endpoint.created` or `endpoint.updated`: the endpoint as it is now.
    pub fn endpoint_saved(
        created: bool,
        subject: &Subject<'_>,
        enabled: bool,
        event_types: &[EventTypeRef],
        at: Timestamp,
    ) -> Self {
        let name = if created {
            ENDPOINT_CREATED
        } else {
            ENDPOINT_UPDATED
        };
        let extra = json!({ "enabled": enabled, "eventTypes": event_types });
        Self::new(name, subject, at, extra)
    }

    pub fn endpoint_deleted(subject: &Subject<'_>, at: Timestamp) -> Self {
        Self::new(ENDPOINT_DELETED, subject, at, json!({}))
    }

    pub fn endpoint_enabled(subject: &Subject<'_>, at: Timestamp) -> Self {
        Self::new(ENDPOINT_ENABLED, subject, at, json!({}))
    }

    /// `reason` is `None` when a person disabled it through the API.
    pub fn endpoint_disabled(subject: &Subject<'_>, reason: Option<&str>, at: Timestamp) -> Self {
        let trigger = if reason.is_some() {
            "automatic"
        } else {
            "manual"
        };
        let extra = json!({ "trigger": trigger, "reason": reason });
        Self::new(ENDPOINT_DISABLED, subject, at, extra)
    }

    pub fn endpoint_recovered(
        subject: &Subject<'_>,
        failing_since: Timestamp,
        at: Timestamp,
    ) -> Self {
        let extra = json!({ "failingSince": failing_since });
        Self::new(ENDPOINT_RECOVERED, subject, at, extra)
    }

    pub fn delivery_failed(
        subject: &Subject<'_>,
        failed: &FailedDelivery<'_>,
        at: Timestamp,
    ) -> Self {
        let extra = json!({
            "deliveryId": failed.delivery_id,
            "eventId": failed.event_id,
            "eventName": failed.event_name,
            "attempts": failed.attempts,
            "lastStatus": failed.last_status,
            "lastError": failed.last_error,
        });
        Self::new(DELIVERY_FAILED, subject, at, extra)
    }

    /// The orgs it is stored in: its own, and the operator org when that is another.
    pub fn orgs<'a>(&'a self, operator: Option<&'a OrgId>) -> impl Iterator<Item = &'a OrgId> {
        std::iter::once(&self.org).chain(operator.filter(|o| **o != self.org))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_is_an_envelope_naming_its_endpoint() {
        let org = OrgId::parse("o-1").expect("org");
        let subject = Subject {
            org: &org,
            uid: EndpointUid(7),
            url: "https://example.com/h",
        };
        let at = Timestamp::from_millis(1_585_777_438_200);
        let n = Notice::endpoint_disabled(&subject, Some("gone"), at);
        let v: Value = serde_json::from_slice(&n.body).expect("json");
        assert_eq!(v["eventName"], "endpoint.disabled");
        assert_eq!(v["version"], 1);
        assert_eq!(v["data"]["orgId"], "o-1");
        assert_eq!(v["data"]["endpointId"], "aHR0cHM6Ly9leGFtcGxlLmNvbS9o");
        assert_eq!(v["data"]["trigger"], "automatic");
        assert_eq!(v["data"]["reason"], "gone");
        assert_eq!(v["data"]["at"], "2020-04-01T21:43:58.200Z");
        assert!(!n.body.contains(&b' '), "compact JSON");
        let operator = OrgId::parse("ops").expect("org");
        assert_eq!(n.orgs(Some(&operator)).count(), 2);
        assert_eq!(n.orgs(Some(&org)).count(), 1);
        assert_eq!(n.orgs(None).count(), 1);
    }
}
