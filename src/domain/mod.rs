//! Newtypes that parse once: a value of one of these types has passed its rules.

pub mod api_key;
pub mod delivery;
pub mod event_type;
pub mod headers;
pub mod ids;
pub mod net;
pub mod notice;
pub mod org;
pub mod schema;
pub mod secret;
pub mod time;
pub mod url;
pub mod web;

pub use api_key::{ApiKey, KeyHash, Role};
pub use delivery::{DeliveryState, ErrorClass};
pub use event_type::{EventName, EventTypeRef};
pub use headers::CustomHeaders;
pub use ids::{ClaimToken, DeliveryId, EndpointUid, EventId, PublicIds};
pub use org::OrgId;
pub use schema::EventSchema;
pub use secret::Secret;
pub use time::Timestamp;
pub use url::{EndpointId, EndpointUrl};
pub use web::{Capabilities, Capability, SessionToken};
