//! The coordinator of a single instance: there is nobody to agree with.

use super::{Coordinator, Ending, Lost, Reserve, Taking};
use crate::engine::permits::Permit;
use crate::engine::store::OpResult;
use crate::llm::Usage;
use crate::state::RunGuard;

/// One instance alone: the state manager's slot is the only claim a run
/// needs, so every step here succeeds at once.
pub(in crate::engine) struct Alone;

impl Coordinator for Alone {
    type Claim = ();
    type Fence = ();
    type Reservation = ();

    const NUMBERS_RESULTS: bool = false;

    async fn take(&self, _guard: &RunGuard, permit: Permit, _takeover: bool) -> Taking<()> {
        Taking::Taken((), permit)
    }

    async fn lost(_claim: &mut ()) -> Lost {
        std::future::pending().await
    }

    fn after_loss(&self, _claim: &(), _why: &Lost) {}

    fn fence(_claim: &()) {}

    /// Run ids grow across restarts (the database keeps the highest).
    fn revision(_fence: Option<&()>, kept: crate::events::RunId) -> u64 {
        kept
    }

    async fn keep(&self, _fence: &(), _result: &OpResult) -> Result<(), String> {
        Ok(())
    }

    async fn reserve(&self, _fence: &(), _guard: &RunGuard, _ahead: Usage) -> Reserve<()> {
        Reserve::Room(())
    }

    async fn settle(&self, _reservation: (), _spent: Usage) {}

    async fn finish(&self, _claim: (), _guard: &RunGuard, _ending: Ending<'_>) {}
}
