//! The tables read straight, beside the service, to check what it stored:
//! on an in-process app's store ([`crate::TestApp::tables`]) or on a
//! connection of the test's own to a server process's database
//! ([`crate::TestDatabase::connect`]).

use std::collections::HashMap;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, Value};

/// One row of the secrets table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRow {
    /// Lower-case hex without dashes, as [`secret_id_key`] writes the API's
    /// ids.
    pub id: String,
    pub organization_id: String,
    /// `pending`, `active`, `revoked` or `discarded`.
    pub state: String,
    /// The PHC string.
    pub hash: String,
    /// The value's last four characters.
    pub hint: String,
}

/// A secret id as the API returns it, in the form [`SecretRow::id`] holds
/// it.
pub fn secret_id_key(id: &str) -> String {
    id.replace('-', "").to_ascii_lowercase()
}

/// Every secret in the table, oldest first.
pub async fn secret_rows(db: &DatabaseConnection) -> Vec<SecretRow> {
    read_secrets(db, None).await
}

/// Every secret of `organization_id`, oldest first.
pub async fn secret_rows_of(db: &DatabaseConnection, organization_id: &str) -> Vec<SecretRow> {
    read_secrets(db, Some(organization_id)).await
}

async fn read_secrets(db: &DatabaseConnection, organization_id: Option<&str>) -> Vec<SecretRow> {
    let backend = db.get_database_backend();
    // SQLite stores a uuid as a blob or as text, depending on the writer.
    let id = match backend {
        DbBackend::Postgres => "replace(id::text, '-', '')",
        _ => {
            "CASE WHEN typeof(id) = 'blob' THEN lower(hex(id)) ELSE lower(replace(id, '-', '')) END"
        }
    };
    let select = format!("SELECT {id} AS id, organization_id, state, hash, hint FROM secrets");
    let statement = match organization_id {
        None => Statement::from_string(backend, format!("{select} ORDER BY created_at")),
        Some(organization_id) => Statement::from_sql_and_values(
            backend,
            format!(
                "{select} WHERE organization_id = {} ORDER BY created_at",
                placeholder(backend)
            ),
            [Value::from(organization_id)],
        ),
    };
    db.query_all_raw(statement)
        .await
        .expect("the secrets table is readable")
        .iter()
        .map(|row| SecretRow {
            id: row.try_get("", "id").expect("an id"),
            organization_id: row.try_get("", "organization_id").expect("an organization"),
            state: row.try_get("", "state").expect("a state"),
            hash: row.try_get("", "hash").expect("a hash"),
            hint: row.try_get("", "hint").expect("a hint"),
        })
        .collect()
}

/// How many of the organization's secrets are in `state`.
pub async fn count_in_state(db: &DatabaseConnection, organization_id: &str, state: &str) -> usize {
    secret_rows_of(db, organization_id)
        .await
        .iter()
        .filter(|row| row.state == state)
        .count()
}

/// How many ACTIVE and PENDING secrets an organization has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSecrets {
    pub organization_id: String,
    pub active: i64,
    pub pending: i64,
}

const LIVE_COUNTS: &str = "SELECT organization_id, \
       SUM(CASE WHEN state = 'active' THEN 1 ELSE 0 END) AS active, \
       SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END) AS pending \
     FROM secrets";

/// For every organization that has secrets: its live counts, all in one
/// read, so that they show one moment.
pub async fn live_secrets(db: &DatabaseConnection) -> Vec<LiveSecrets> {
    let backend = db.get_database_backend();
    let sql = format!("{LIVE_COUNTS} GROUP BY organization_id");
    read_live(db, Statement::from_string(backend, sql)).await
}

/// The live counts of `organization_id`, in one read (zero and zero if it
/// has no secret).
pub async fn live_secrets_of(db: &DatabaseConnection, organization_id: &str) -> LiveSecrets {
    let backend = db.get_database_backend();
    let sql = format!(
        "{LIVE_COUNTS} WHERE organization_id = {} GROUP BY organization_id",
        placeholder(backend)
    );
    let statement = Statement::from_sql_and_values(backend, sql, [Value::from(organization_id)]);
    read_live(db, statement)
        .await
        .pop()
        .unwrap_or_else(|| LiveSecrets {
            organization_id: organization_id.to_owned(),
            active: 0,
            pending: 0,
        })
}

async fn read_live(db: &DatabaseConnection, statement: Statement) -> Vec<LiveSecrets> {
    db.query_all_raw(statement)
        .await
        .expect("the secrets table is readable")
        .iter()
        .map(|row| LiveSecrets {
            organization_id: row.try_get("", "organization_id").expect("an organization"),
            active: row.try_get("", "active").expect("a count"),
            pending: row.try_get("", "pending").expect("a count"),
        })
        .collect()
}

/// Panics unless every organization among `rows` has at most one ACTIVE
/// and at most one PENDING secret: the invariant the database enforces.
#[track_caller]
pub fn assert_one_active_and_one_pending_at_most(rows: &[SecretRow]) {
    let mut live: HashMap<(&str, &str), usize> = HashMap::new();
    for row in rows {
        if row.state == "active" || row.state == "pending" {
            *live.entry((&row.organization_id, &row.state)).or_default() += 1;
        }
    }
    for ((organization, state), n) in live {
        assert!(n <= 1, "{organization} has {n} {state} secrets");
    }
}

/// Every row of every table, one line each, as text: what someone with a
/// copy of the database could read.
pub async fn dump_tables(db: &DatabaseConnection) -> String {
    let backend = db.get_database_backend();
    let mut dump = String::new();
    for table in table_names(db).await {
        let sql = match backend {
            DbBackend::Postgres => {
                format!("SELECT row_to_json(t)::text AS line FROM \"{table}\" t")
            }
            _ => {
                let columns = sqlite_columns(db, &table).await;
                // quote() renders every type as text, blobs as X'…' hex.
                let line = columns
                    .iter()
                    .map(|column| format!("quote(\"{column}\")"))
                    .collect::<Vec<_>>()
                    .join(" || ',' || ");
                format!("SELECT {line} AS line FROM \"{table}\"")
            }
        };
        let rows = db
            .query_all_raw(Statement::from_string(backend, sql))
            .await
            .expect("tables are readable");
        for row in rows {
            let line: String = row.try_get("", "line").expect("a text line");
            dump.push_str(&table);
            dump.push_str(": ");
            dump.push_str(&line);
            dump.push('\n');
        }
    }
    dump
}

/// The tables of the database's own schema.
async fn table_names(db: &DatabaseConnection) -> Vec<String> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => {
            "SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema() \
             ORDER BY tablename"
        }
        _ => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             ORDER BY name"
        }
    };
    db.query_all_raw(Statement::from_string(backend, sql))
        .await
        .expect("the catalog is readable")
        .iter()
        .map(|row| row.try_get("", "name").expect("a table name"))
        .collect()
}

async fn sqlite_columns(db: &DatabaseConnection, table: &str) -> Vec<String> {
    let sql = format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid");
    db.query_all_raw(Statement::from_string(DbBackend::Sqlite, sql))
        .await
        .expect("the table's columns are readable")
        .iter()
        .map(|row| row.try_get("", "name").expect("a column name"))
        .collect()
}

/// The first bound parameter, as the backend spells it.
fn placeholder(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => "$1",
        _ => "?",
    }
}
