//! One scenario, one test per backend: what
//! [`on_every_backend!`](crate::on_every_backend) expands to, and how it
//! prepares the scenario's parameter.

use std::future::Future;

use integration_service::config::Settings;

use crate::{
    app::{TestApp, spawn_app_with},
    database::{Backend, TestDatabase},
};

/// A change to the test settings, made before a scenario's server starts.
pub type Adjust = fn(&mut Settings);

/// What a scenario of [`on_every_backend!`](crate::on_every_backend) takes,
/// made fresh for each backend: a [`TestApp`] (an in-process server), a
/// [`TestDatabase`] (for a scenario that starts server processes itself)
/// or the [`Backend`] alone.
pub trait Fixture: Sized {
    /// The fixture on `backend`; `None` when the backend is not available
    /// (PostgreSQL without `TEST_DATABASE_URL`), and then the test passes
    /// without running. `adjust` changes the settings of the server a
    /// [`TestApp`] starts; other fixtures start no server and refuse one.
    fn prepare(
        backend: Backend,
        adjust: Option<Adjust>,
    ) -> impl Future<Output = Option<Self>> + Send;
}

impl Fixture for TestApp {
    async fn prepare(backend: Backend, adjust: Option<Adjust>) -> Option<Self> {
        spawn_app_with(backend, |settings| {
            if let Some(adjust) = adjust {
                adjust(settings);
            }
        })
        .await
    }
}

impl Fixture for TestDatabase {
    async fn prepare(backend: Backend, adjust: Option<Adjust>) -> Option<Self> {
        assert!(adjust.is_none(), "{NO_SERVER}");
        TestDatabase::create(backend).await
    }
}

impl Fixture for Backend {
    async fn prepare(backend: Backend, adjust: Option<Adjust>) -> Option<Self> {
        assert!(adjust.is_none(), "{NO_SERVER}");
        backend.is_available().then_some(backend)
    }
}

const NO_SERVER: &str = "settings are adjusted for a TestApp; a scenario that takes a \
                         TestDatabase or a Backend starts its servers itself";

/// Runs `scenario` on a fixture prepared for `backend`: the body of each
/// test [`on_every_backend!`](crate::on_every_backend) writes. SQLite is
/// always available.
#[doc(hidden)]
pub async fn run_on<F, R>(backend: Backend, adjust: Option<Adjust>, scenario: impl FnOnce(F) -> R)
where
    F: Fixture,
    R: Future<Output = ()>,
{
    match F::prepare(backend, adjust).await {
        Some(fixture) => scenario(fixture).await,
        None => assert_ne!(backend, Backend::Sqlite, "SQLite is always available"),
    }
}

/// Like [`run_on`], for a scenario that is not async and takes the
/// [`Backend`] (it runs a runtime of its own).
#[doc(hidden)]
pub fn run_blocking_on(backend: Backend, scenario: impl FnOnce(Backend)) {
    if backend.is_available() {
        scenario(backend);
    }
}

/// Runs a scenario once per backend, as two tests named `sqlite` and
/// `postgres` in a module named after the scenario, so that the test reads
/// `activate_secret::a_retried_activation_succeeds_and_changes_nothing::postgres`.
///
/// ```text
/// on_every_backend! {
///     /// The scenario's documentation.
///     async fn a_retried_activation_succeeds(app: TestApp) { /* … */ }
/// }
///
/// on_every_backend! {
///     async fn floods_are_throttled(app: TestApp) with strict_throttle { /* … */ }
/// }
///
/// on_every_backend! {
///     async fn a_killed_server_loses_nothing(database: TestDatabase) { /* … */ }
/// }
///
/// on_every_backend! {
///     fn every_sequence_behaves_as_the_model_says(backend: Backend) { /* … */ }
/// }
/// ```
///
/// The parameter's type says what the scenario gets (see [`Fixture`]):
/// a [`TestApp`] on a fresh database, with the test settings changed by
/// the function named after `with` (an [`Adjust`]); a fresh, empty
/// [`TestDatabase`]; or the [`Backend`]. A scenario written as a plain `fn`
/// takes the [`Backend`] and runs as a plain `#[test]`; an `async fn` runs
/// on a multi-threaded runtime of two workers (argon2 runs off the async
/// workers, and a graceful stop waits for tasks), so the calling crate
/// needs `tokio`. The adjuster is named, not a closure: its name says what
/// the scenario changes. The module imports everything of the module it is
/// written in.
#[macro_export]
macro_rules! on_every_backend {
    (
        $(#[$meta:meta])*
        async fn $name:ident($($param:tt)+) $(with $adjust:path)? $body:block
    ) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[$meta])*
            async fn scenario($($param)+) $body

            fn adjust() -> ::core::option::Option<$crate::Adjust> {
                $crate::__adjust!($($adjust)?)
            }

            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::run_on($crate::Backend::Sqlite, adjust(), scenario).await;
            }

            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::run_on($crate::Backend::Postgres, adjust(), scenario).await;
            }
        }
    };
    (
        $(#[$meta:meta])*
        fn $name:ident($($param:tt)+) $body:block
    ) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[$meta])*
            fn scenario($($param)+) $body

            #[test]
            fn sqlite() {
                $crate::run_blocking_on($crate::Backend::Sqlite, scenario);
            }

            #[test]
            fn postgres() {
                $crate::run_blocking_on($crate::Backend::Postgres, scenario);
            }
        }
    };
}

/// The adjuster of an [`on_every_backend!`](crate::on_every_backend)
/// scenario, if it names one.
#[doc(hidden)]
#[macro_export]
macro_rules! __adjust {
    () => {
        ::core::option::Option::None
    };
    ($adjust:path) => {
        ::core::option::Option::Some($adjust as $crate::Adjust)
    };
}
