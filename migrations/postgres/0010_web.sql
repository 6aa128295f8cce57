-- The web console's and the customer portal's sessions, stored by the SHA-256 of their
-- secret (like API keys): a console session signed in with an API key (`key_hash`), a
-- portal grant, and the portal sessions made from a grant (`grant_hash`). Revoking a
-- grant revokes its sessions through the `grant_hash` index.
CREATE TABLE web_sessions (
    hash         BYTEA PRIMARY KEY,
    org_id       TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('console', 'portal_grant', 'portal')),
    capabilities TEXT NOT NULL,
    read_only    BOOLEAN NOT NULL,
    csrf         TEXT NOT NULL,
    key_hash     BYTEA,
    grant_hash   BYTEA,
    created_ms   BIGINT NOT NULL,
    expires_ms   BIGINT NOT NULL,
    revoked_ms   BIGINT
);
CREATE INDEX web_sessions_grant ON web_sessions (grant_hash) WHERE grant_hash IS NOT NULL;
CREATE INDEX web_sessions_key ON web_sessions (key_hash) WHERE key_hash IS NOT NULL;

-- The org-wide delivery log, newest first by keyset on the id.
CREATE INDEX deliveries_org ON deliveries (org_id, id);

-- An endpoint's failed deliveries by publish time: what recovering them (and the
-- console's count before it) reads, without walking the endpoint's whole history.
CREATE INDEX deliveries_failed ON deliveries (endpoint_uid, created_ms) WHERE state = 'failed';
