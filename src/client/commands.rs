//! The client commands that are one API call each (or one per page).

use serde_json::{json, Value};

use super::api::{segment, Api, ClientError, ClientResult};
use super::args::{
    ClientCommand, DeliveriesCommand, EndpointFields, EndpointsCommand, EventTypesCommand,
    EventsCommand, RemoteKeysCommand, SubcategoriesCommand,
};
use super::config::{ConfigFile, Profile, DEFAULT_PROFILE};
use super::output::{self, Column, Format};
use super::Remote;

const ENDPOINT_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("URL", "url"),
    ("ENABLED", "enabled"),
    ("EVENT TYPES", "eventTypes"),
    ("DISABLED REASON", "disabledReason"),
];
const DELIVERY_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("EVENT", "eventName"),
    ("STATE", "state"),
    ("ATTEMPTS", "attempts"),
    ("LAST STATUS", "lastStatus"),
    ("CREATED", "created"),
    ("NEXT ATTEMPT", "nextAttempt"),
];
const ATTEMPT_COLUMNS: &[Column] = &[
    ("NO", "attemptNo"),
    ("STARTED", "started"),
    ("STATUS", "statusCode"),
    ("LATENCY MS", "latencyMs"),
    ("ERROR", "error"),
];
const KEY_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("ROLE", "role"),
    ("NAME", "name"),
    ("CREATED", "created"),
    ("REVOKED", "revoked"),
];

pub async fn run(command: ClientCommand) -> ClientResult<()> {
    match command {
        ClientCommand::Login { remote } => login(remote).await,
        ClientCommand::Endpoints { remote, command } => {
            endpoints(&remote.api()?, remote.output, command).await
        }
        ClientCommand::EventTypes {
            remote,
            command: EventTypesCommand::List,
        } => {
            let answer = remote.api()?.get("/webhooks/v1/event-types").await?;
            let columns: &[Column] = &[
                ("EVENT NAME", "eventName"),
                ("DISPLAY NAME", "displayName"),
                ("SUBCATEGORIES", "hasSubcategories"),
                ("VERSION", "version"),
            ];
            output::list(
                remote.output,
                &answer,
                rows(&answer, "eventDefs"),
                columns,
                "no event types",
            );
            Ok(())
        }
        ClientCommand::Subcategories { remote, command } => {
            subcategories(&remote.api()?, remote.output, command).await
        }
        ClientCommand::Events { remote, command } => match command {
            EventsCommand::Publish {
                file: Some(file), ..
            } => super::publish::file(&remote.api()?, remote.output, &file).await,
            EventsCommand::Publish {
                event_name,
                data,
                subcategory,
                idempotency_key,
                file: None,
            } => {
                let data: Value = serde_json::from_str(&data)
                    .map_err(|e| ClientError::Usage(format!("--data is not JSON: {e}")))?;
                let mut body = json!({"eventName": event_name, "data": data});
                put(&mut body, "subcategory", subcategory.map(Value::from));
                put(
                    &mut body,
                    "idempotencyKey",
                    idempotency_key.map(Value::from),
                );
                let answer = remote.api()?.post("/webhooks/v1/events", &body).await?;
                output::object(remote.output, &answer);
                Ok(())
            }
            EventsCommand::Get { id } => {
                let path = format!("/webhooks/v1/events/{}", segment(&id));
                let answer = remote.api()?.get(&path).await?;
                match remote.output {
                    Format::Json => output::json(&answer),
                    Format::Table => {
                        let mut head = answer.clone();
                        if let Some(map) = head.as_object_mut() {
                            map.remove("deliveries");
                        }
                        output::object(Format::Table, &head);
                        println!();
                        output::list(
                            Format::Table,
                            &answer,
                            rows(&answer, "deliveries"),
                            DELIVERY_COLUMNS,
                            "no deliveries",
                        );
                    }
                }
                Ok(())
            }
        },
        ClientCommand::Deliveries { remote, command } => {
            deliveries(&remote.api()?, remote.output, command).await
        }
        ClientCommand::Recover {
            endpoint,
            since,
            until,
            no_follow,
            timeout,
            remote,
        } => {
            let range = super::recover::Range::parse(&since, until.as_deref())?;
            super::recover::run(
                &remote.api()?,
                remote.output,
                &endpoint,
                range,
                !no_follow,
                timeout,
            )
            .await
        }
    }
}

/// `posthorn keys list|revoke`, and `keys create` without `--org`.
pub async fn keys(
    remote: &Remote,
    command: Option<RemoteKeysCommand>,
    create: Option<(String, Option<String>)>,
) -> ClientResult<()> {
    let api = remote.api()?;
    match (command, create) {
        (_, Some((role, name))) => {
            let mut body = json!({"role": role});
            put(&mut body, "name", name.map(Value::from));
            let answer = api.post("/webhooks/v1/keys", &body).await?;
            if remote.output == Format::Table {
                eprintln!("The key is shown this once: keep it now.");
            }
            output::object(remote.output, &answer);
        }
        (Some(RemoteKeysCommand::List), None) => {
            let answer = api.get("/webhooks/v1/keys").await?;
            output::list(
                remote.output,
                &answer,
                rows(&answer, "keys"),
                KEY_COLUMNS,
                "no keys",
            );
        }
        (Some(RemoteKeysCommand::Revoke { id }), None) => {
            api.delete(&format!("/webhooks/v1/keys/{}", segment(&id)))
                .await?;
            if remote.output == Format::Table {
                println!("revoked {id}");
            } else {
                output::json(&json!({"revoked": id}));
            }
        }
        (None, None) => {}
    }
    Ok(())
}

async fn login(remote: Remote) -> ClientResult<()> {
    let url = remote
        .url
        .clone()
        .ok_or_else(|| ClientError::Usage("give the server with --url (or POSTHORN_URL)".into()))?;
    let key = match remote.key.clone() {
        Some(key) => key,
        None => read_key()?,
    };
    let api = Api::new(&url, &key)?;
    // Any valid key may read the catalog: this proves the key before it is saved.
    api.get("/webhooks/v1/event-types").await?;
    let mut file = ConfigFile::load()?;
    let name = remote.profile.unwrap_or_else(|| DEFAULT_PROFILE.to_owned());
    file.profiles.insert(
        name.clone(),
        Profile {
            url: api.base().to_owned(),
            key,
        },
    );
    file.default = Some(name.clone());
    let path = file.save()?;
    eprintln!(
        "logged in to {} as profile {name:?}; saved in {} (mode 0600)",
        api.base(),
        path.display()
    );
    Ok(())
}

/// The key, from one line of standard input (prompted for on a terminal).
fn read_key() -> ClientResult<String> {
    use std::io::{BufRead, IsTerminal};
    if std::io::stdin().is_terminal() {
        eprint!("API key: ");
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| ClientError::Usage(format!("cannot read the key: {e}")))?;
    let key = line.trim().to_owned();
    if key.is_empty() {
        return Err(ClientError::Usage(
            "no API key: give --key or type it".into(),
        ));
    }
    Ok(key)
}

async fn endpoints(api: &Api, format: Format, command: EndpointsCommand) -> ClientResult<()> {
    let path = |id: &str| format!("/webhooks/v1/endpoints/{}", segment(id));
    match command {
        EndpointsCommand::List => {
            let all = every_page(api, "/webhooks/v1/endpoints", "endpoints").await?;
            let whole = json!({"endpoints": all});
            output::list(
                format,
                &whole,
                &all,
                ENDPOINT_COLUMNS,
                "no endpoints yet: create one with `posthorn endpoints create URL`",
            );
        }
        EndpointsCommand::Get { id } => output::object(format, &api.get(&path(&id)).await?),
        EndpointsCommand::Create {
            endpoint_url,
            fields,
            secret,
        } => {
            let mut body = endpoint_body(&fields)?;
            body["url"] = Value::from(endpoint_url);
            put(&mut body, "secret", secret.map(Value::from));
            let answer = api.post("/webhooks/v1/endpoints", &body).await?;
            if format == Format::Table && answer.get("secret").is_some() {
                eprintln!("The secret is shown this once: keep it now.");
            }
            output::object(format, &answer);
        }
        EndpointsCommand::Update {
            id,
            endpoint_url,
            fields,
        } => {
            let mut body = endpoint_body(&fields)?;
            put(&mut body, "url", endpoint_url.map(Value::from));
            output::object(format, &api.post(&path(&id), &body).await?);
        }
        EndpointsCommand::Delete { id } => {
            api.delete(&path(&id)).await?;
            match format {
                Format::Table => println!("deleted {id}"),
                Format::Json => output::json(&json!({"deleted": id})),
            }
        }
    }
    Ok(())
}

/// The fields of a Create or Update body that the flags give.
fn endpoint_body(fields: &EndpointFields) -> ClientResult<Value> {
    let mut body = json!({});
    if !fields.event_types.is_empty() {
        let types: Vec<Value> = fields
            .event_types
            .iter()
            .map(|t| match t.split_once(':') {
                Some((name, sub)) => json!({"eventName": name, "subcategory": sub}),
                None => json!({"eventName": t}),
            })
            .collect();
        body["eventTypes"] = Value::from(types);
    }
    if fields.disabled {
        body["disabled"] = Value::Bool(true);
    }
    put(&mut body, "rateLimit", fields.rate_limit.map(Value::from));
    put(
        &mut body,
        "ordering",
        fields.ordering.clone().map(Value::from),
    );
    Ok(body)
}

async fn subcategories(
    api: &Api,
    format: Format,
    command: SubcategoriesCommand,
) -> ClientResult<()> {
    match command {
        SubcategoriesCommand::List { event_type } => {
            let path = format!(
                "/webhooks/v1/event-types/{}/subcategories",
                segment(&event_type)
            );
            let all = every_page(api, &path, "subcategoryDefs").await?;
            let whole = json!({"subcategoryDefs": all});
            let columns: &[Column] = &[
                ("SUBCATEGORY", "subcategory"),
                ("DISPLAY NAME", "displayName"),
            ];
            output::list(format, &whole, &all, columns, "no subcategories");
        }
        SubcategoriesCommand::Create {
            event_type,
            display_name,
        } => {
            let path = format!(
                "/webhooks/v1/event-types/{}/subcategories",
                segment(&event_type)
            );
            let answer = api
                .post(&path, &json!({"displayName": display_name}))
                .await?;
            output::object(format, &answer);
        }
    }
    Ok(())
}

async fn deliveries(api: &Api, format: Format, command: DeliveriesCommand) -> ClientResult<()> {
    match command {
        DeliveriesCommand::List {
            endpoint,
            state,
            since,
            until,
            limit,
        } => {
            let mut query = vec![("limit", limit.min(100).to_string())];
            for (name, value) in [("state", state), ("since", since), ("until", until)] {
                if let Some(value) = value {
                    query.push((name, value));
                }
            }
            let query: String = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(query)
                .finish();
            let path = format!(
                "/webhooks/v1/endpoints/{}/deliveries?{query}",
                segment(&endpoint)
            );
            let answer = api.get(&path).await?;
            output::list(
                format,
                &answer,
                rows(&answer, "deliveries"),
                DELIVERY_COLUMNS,
                "no deliveries",
            );
        }
        DeliveriesCommand::Attempts { id } => {
            let answer = api
                .get(&format!(
                    "/webhooks/v1/deliveries/{}/attempts",
                    segment(&id)
                ))
                .await?;
            output::list(
                format,
                &answer,
                rows(&answer, "attempts"),
                ATTEMPT_COLUMNS,
                "no attempts yet",
            );
        }
        DeliveriesCommand::Retry { id } => {
            let answer = api
                .post(
                    &format!("/webhooks/v1/deliveries/{}/retry", segment(&id)),
                    &json!({}),
                )
                .await?;
            output::object(format, &answer);
        }
    }
    Ok(())
}

/// The objects of a list answer's `field` (absent when the list is empty).
fn rows<'a>(answer: &'a Value, field: &str) -> &'a [Value] {
    answer
        .get(field)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Every page of a paginated list.
async fn every_page(api: &Api, path: &str, field: &str) -> ClientResult<Vec<Value>> {
    let mut all = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page_path = match &token {
            None => path.to_owned(),
            Some(t) => format!("{path}?paginationToken={}", segment(t)),
        };
        let page = api.get(&page_path).await?;
        all.extend(rows(&page, field).iter().cloned());
        match page.get("nextPaginationToken").and_then(Value::as_str) {
            Some(next) if !next.is_empty() => token = Some(next.to_owned()),
            _ => return Ok(all),
        }
    }
}

/// Sets `field` of an object when there is a value.
fn put(body: &mut Value, field: &str, value: Option<Value>) {
    if let (Some(map), Some(value)) = (body.as_object_mut(), value) {
        map.insert(field.to_owned(), value);
    }
}
