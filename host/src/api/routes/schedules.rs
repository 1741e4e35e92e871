//! `/v1/processes/{id}/schedules`: cron schedules of a process (logic and the scheduler in
//! [`crate::runs::schedule`]). Managing them needs ManageProcess on the process, listing
//! them ViewProcess.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Body;
use crate::api::AppState;
use crate::api::auth::Caller;
use crate::api::error::ApiError;
use crate::policy::Action;
use crate::runs::schedule::{NewSchedule, Schedule, ScheduleError};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_schedules, create_schedule))
        .routes(routes!(delete_schedule))
}

impl From<ScheduleError> for ApiError {
    fn from(e: ScheduleError) -> Self {
        match e {
            e @ ScheduleError::BadCron { .. } => {
                ApiError::bad_request("invalid_cron", e.to_string())
            }
            e @ ScheduleError::Invalid(_) => ApiError::bad_request("invalid", e.to_string()),
            e @ ScheduleError::NotFound(_) => ApiError::not_found(e.to_string()),
            ScheduleError::Runs(e) => e.into(),
            other => ApiError::failure(other),
        }
    }
}

/// A process's schedules.
#[utoipa::path(get, path = "/v1/processes/{id}/schedules", params(("id" = String, Path, description = "process id")), responses((status = 200, description = "its schedules", body = Vec<Schedule>), (status = 404, description = "`not_found`: unknown or not visible")))]
async fn list_schedules(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<Schedule>>, ApiError> {
    let process = state.load_process(&id)?;
    state
        .authorize_process(&caller, Action::ViewProcess, &process)
        .await?;
    Ok(Json(state.schedules.list(&process.id)?))
}

/// Add a cron schedule (5 fields, or 6 with leading seconds; UTC). Each firing starts an
/// ordinary run whose actor is `schedule:<id>`. `catch_up` (default true): fire once at
/// start when an occurrence was missed while the server was down.
#[utoipa::path(post, path = "/v1/processes/{id}/schedules", params(("id" = String, Path, description = "process id")), request_body = NewSchedule, responses((status = 201, description = "created", body = Schedule), (status = 400, description = "`invalid_cron`, `invalid_inputs` or `invalid`"), (status = 404, description = "`not_found`: unknown or not visible")))]
async fn create_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<NewSchedule>,
) -> Result<(StatusCode, Json<Schedule>), ApiError> {
    let process = state.load_process(&id)?;
    state
        .authorize_process(&caller, Action::ManageProcess, &process)
        .await?;
    state
        .dispatcher
        .check_run_inputs(&process, req.inputs.clone())
        .map_err(super::processes::start_error)?;
    let schedule = state
        .schedules
        .create(&process.id, req, &caller.user.name)
        .await?;
    state
        .audit_ok(
            &caller.user.name,
            "schedule.create",
            format!(
                "schedule {} of process {}: cron {:?}, catch_up {}",
                schedule.id, process.id, schedule.cron, schedule.catch_up
            ),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(schedule)))
}

/// Delete a schedule.
#[utoipa::path(delete, path = "/v1/processes/{id}/schedules/{schedule}", params(("id" = String, Path, description = "process id"), ("schedule" = String, Path, description = "schedule id")), responses((status = 204, description = "deleted"), (status = 404, description = "`not_found`: unknown process or schedule")))]
async fn delete_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, schedule)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let process = state.load_process(&id)?;
    state
        .authorize_process(&caller, Action::ManageProcess, &process)
        .await?;
    if !state.schedules.delete(&process.id, &schedule).await? {
        return Err(ApiError::not_found(format!("schedule {schedule}")));
    }
    state
        .audit_ok(
            &caller.user.name,
            "schedule.delete",
            format!("schedule {schedule} of process {id}"),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
