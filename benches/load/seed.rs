//! The organizations a run works with: the reference organization, made
//! through the API, and the seeded ones, inserted straight into the tables
//! in bulk and read back through the API.

use std::time::Instant;

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use support::Backend;

use crate::{Context, Res, server::Connection};

/// The organization created through the API; every seeded organization
/// copies its secret's hash, hint and timestamps.
const REFERENCE_ORG: &str = "bench-reference";
/// Organizations seeded for the scale phases: `bench-scale-<n>`, client ID
/// `S` and `n` on 23 digits.
pub const SCALE: Prefixes = Prefixes {
    organization: "bench-scale-",
    client: "S",
};
/// Organizations seeded for the cold phase, used once each.
pub const COLD: Prefixes = Prefixes {
    organization: "bench-cold-",
    client: "C",
};

/// How seeded organization `n` of a kind is named: organization
/// `<organization><n>`, client ID `<client>` and `n` on 23 digits (24 base62
/// characters, as the server requires).
#[derive(Debug, Clone, Copy)]
pub struct Prefixes {
    organization: &'static str,
    client: &'static str,
}

impl Prefixes {
    pub fn organization(self, n: u64) -> String {
        format!("{}{n}", self.organization)
    }

    pub fn client_id(self, n: u64) -> String {
        format!("{}{n:023}", self.client)
    }
}

/// What the reference organization, created through the API, gives the
/// seeded ones.
pub struct Reference {
    pub client_id: String,
    pub secret: String,
}

/// CreateIntegration, GenerateSecret, ActivateSecret, then one
/// ValidateClient that must answer valid.
pub async fn create_reference(connection: &Connection) -> Res<Reference> {
    let Connection {
        admin, validator, ..
    } = connection;
    let integration = admin
        .create(REFERENCE_ORG)
        .await
        .context("CreateIntegration of the reference organization")?;
    let (secret, _) = admin
        .generate(REFERENCE_ORG)
        .await
        .context("GenerateSecret")?;
    admin
        .activate(REFERENCE_ORG, &secret)
        .await
        .context("ActivateSecret")?;
    // One validation, as a gateway's first call: the phases measure the
    // steady state, not the first miss (and this checks that it validates).
    let answer = validator
        .validate(&integration.client_id, &secret)
        .await
        .context("ValidateClient of the reference organization")?;
    if !answer.valid {
        return Err("the reference organization's secret does not validate".into());
    }
    Ok(Reference {
        client_id: integration.client_id,
        secret,
    })
}

/// One seeding, timed.
pub struct Seeding {
    pub what: String,
    pub rows: u64,
    /// Integrations in the database afterwards.
    pub total: u64,
    pub seconds: f64,
    /// Inserting integrations, inserting secrets, refreshing statistics.
    pub steps: [f64; 3],
}

/// Inserts organizations `kind.organization(n)` for n in `from..=to`, each
/// with an active secret: the reference organization's hash, hint and
/// timestamps (so every seeded organization has the reference's secret
/// value, and the rows are in exactly the format SeaORM wrote), in two bulk
/// statements, then refreshes the planner's statistics.
pub async fn seed(
    db: &DatabaseConnection,
    backend: Backend,
    kind: Prefixes,
    from: u64,
    to: u64,
) -> Res<Seeding> {
    let Prefixes {
        organization: org_prefix,
        client: client_prefix,
    } = kind;
    let what = format!("{org_prefix}{{{from}..={to}}}");
    let (series, client_id, secret_id) = match backend {
        Backend::Postgres => (
            format!("generate_series({from}::bigint, {to}::bigint) AS seq(n)"),
            format!("'{client_prefix}' || lpad(n::text, 23, '0')"),
            "gen_random_uuid()",
        ),
        Backend::Sqlite => (
            "seq".to_owned(),
            format!("'{client_prefix}' || substr('00000000000000000000000' || n, -23)"),
            // SeaORM stores a uuid as a 16-byte BLOB on SQLite.
            "randomblob(16)",
        ),
    };
    let with = match backend {
        Backend::Postgres => String::new(),
        Backend::Sqlite => format!(
            "WITH RECURSIVE seq(n) AS (SELECT {from} UNION ALL SELECT n + 1 FROM seq WHERE n < {to}) "
        ),
    };
    let integrations = format!(
        "{with}INSERT INTO integrations (organization_id, client_id, custom_domain, created_at, updated_at) \
         SELECT '{org_prefix}' || n, {client_id}, NULL, r.created_at, r.updated_at \
         FROM {series}, (SELECT created_at, updated_at FROM integrations \
                         WHERE organization_id = '{REFERENCE_ORG}') AS r"
    );
    let secrets = format!(
        "{with}INSERT INTO secrets (id, organization_id, state, hash, hint, created_at, activated_at, revoked_at) \
         SELECT {secret_id}, '{org_prefix}' || n, 'active', r.hash, r.hint, r.created_at, r.activated_at, NULL \
         FROM {series}, (SELECT hash, hint, created_at, activated_at FROM secrets \
                         WHERE organization_id = '{REFERENCE_ORG}' AND state = 'active') AS r"
    );
    // Fresh statistics, as a long-lived database would have (and on SQLite
    // the bulk insert moved from the write-ahead log into the database).
    let analyze = match backend {
        Backend::Postgres => "VACUUM ANALYZE integrations, secrets",
        Backend::Sqlite => "ANALYZE; PRAGMA wal_checkpoint(TRUNCATE)",
    };
    let mut steps = [0.0; 3];
    if from <= to {
        for (i, sql) in [integrations.as_str(), &secrets, analyze]
            .iter()
            .enumerate()
        {
            let started = Instant::now();
            db.execute_unprepared(sql)
                .await
                .map_err(|e| format!("seeding {what}: {e}"))?;
            steps[i] = started.elapsed().as_secs_f64();
        }
    }
    let seeding = Seeding {
        rows: (to + 1).saturating_sub(from),
        total: count_integrations(db).await?,
        seconds: steps.iter().sum(),
        steps,
        what,
    };
    eprintln!(
        "  seeded {} in {:.1} s: {} rows, {} integrations in all",
        seeding.what, seeding.seconds, seeding.rows, seeding.total
    );
    Ok(seeding)
}

async fn count_integrations(db: &DatabaseConnection) -> Res<u64> {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM integrations",
        ))
        .await
        .context("counting integrations")?
        .ok_or("no count")?;
    let n: i64 = row.try_get("", "n").context("count")?;
    Ok(n as u64)
}

/// Reads seeded organization `n` back through the API (GetIntegration
/// decodes every column, uuids and timestamps included) and checks that its
/// client ID and the shared secret validate.
pub async fn check_seeded(
    connection: &Connection,
    reference: &Reference,
    kind: Prefixes,
    n: u64,
) -> Res<()> {
    let organization = kind.organization(n);
    let client_id = kind.client_id(n);
    let integration = connection
        .admin
        .get(&organization)
        .await
        .map_err(|s| format!("GetIntegration of seeded {organization}: {s}"))?;
    let active = integration
        .active_secret
        .ok_or_else(|| format!("seeded {organization} has no active secret"))?;
    let hint = &reference.secret[reference.secret.len() - 4..];
    if integration.client_id != client_id || active.hint != hint || active.create_time.is_none() {
        return Err(format!(
            "seeded {organization} reads back wrong: client_id {}, hint {}",
            integration.client_id, active.hint
        ));
    }
    let answer = connection
        .validator
        .validate(&client_id, &reference.secret)
        .await
        .map_err(|s| format!("ValidateClient of seeded {organization}: {s}"))?;
    if !answer.valid || answer.organization_id != organization {
        return Err(format!("seeded {organization} does not validate"));
    }
    Ok(())
}
