//! Turning Warden's requests into Cedar requests and Cedar's answers into decisions.
//!
//! Threat: a request that slips past the policies because it was built wrong (a share set
//! dropped, a role missing from the user's parents), and a forbid policy that errors and so,
//! under Cedar's rules, silently stops applying. Every API request is validated against the
//! schema before evaluation (a mismatch denies with [`INVALID_REQUEST`]); host-call requests
//! have one fixed shape, checked against the schema once at load. A forbid that errors
//! denies as if it had matched.
//!
//! Entities are built from ids with `EntityUid::from_type_name_and_id`, never by formatting
//! policy text, so a user, role or target name cannot inject Cedar syntax. Type names and
//! action uids are parsed once per load; a host call reuses one entity store built at load.

use std::collections::HashSet;
use std::str::FromStr;

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Decision, Effect, Entities, Entity, EntityId,
    EntityTypeName, EntityUid, PolicySet, Request, Response, RestrictedExpression, Schema,
};

use super::load::Loaded;
use super::{
    Action, DEFAULT_DENY, HostCallRequest, INVALID_REQUEST, OVERSIZE_HOST_CALL, PolicyDecision,
    Principal, ProcessRef, Resource,
};

/// Cap on a host call's `command` and `path`, in bytes. Both come from the guest, and an
/// administrator's `like` pattern costs time in the product of pattern and text lengths; a
/// longer text is denied with [`OVERSIZE_HOST_CALL`] before any policy sees it.
pub const MAX_HOST_CALL_TEXT_BYTES: usize = 64 * 1024;

/// Id of the single `System` entity.
const SYSTEM_ID: &str = "warden";

/// Entity type names and action uids, parsed once per load and checked against the schema.
pub(super) struct Names {
    user: EntityTypeName,
    role: EntityTypeName,
    privilege: EntityTypeName,
    process: EntityTypeName,
    module: EntityTypeName,
    target: EntityTypeName,
    credential: EntityTypeName,
    system: EntityUid,
    /// Indexed by `Action as usize`.
    actions: Vec<EntityUid>,
    host_call: EntityUid,
    authorizer: Authorizer,
    /// The schema's actions that belong to an action group, with their groups as parents.
    /// Cedar reads `action in Action::"Group"` from the entity store, so without these a
    /// policy on a group an administrator declared would never match. Usually empty.
    grouped_actions: Vec<Entity>,
    /// The whole entity store of a host call: no entity there has attributes an
    /// administrator's policy could read, so only the grouped actions are needed.
    host_call_entities: Entities,
}

impl Names {
    /// Parses the names and checks that `schema` declares each, so a schema edit that
    /// drops one fails the load instead of denying every such request at run time.
    pub(super) fn new(schema: &Schema) -> Result<Self, String> {
        let declared: HashSet<String> = schema.entity_types().map(ToString::to_string).collect();
        let ty = |name: &str| -> Result<EntityTypeName, String> {
            if !declared.contains(name) {
                return Err(format!("the schema does not declare entity type {name}"));
            }
            EntityTypeName::from_str(name).map_err(|e| e.to_string())
        };
        let actions_declared: HashSet<&EntityUid> = schema.actions().collect();
        let action = |name: &str| -> Result<EntityUid, String> {
            let uid = EntityUid::from_type_name_and_id(
                EntityTypeName::from_str("Action").map_err(|e| e.to_string())?,
                EntityId::new(name),
            );
            match actions_declared.contains(&uid) {
                true => Ok(uid),
                false => Err(format!("the schema does not declare action {name}")),
            }
        };
        let system = EntityUid::from_type_name_and_id(ty("System")?, EntityId::new(SYSTEM_ID));
        let grouped = grouped_actions(schema)?;
        Ok(Names {
            user: ty("User")?,
            role: ty("Role")?,
            privilege: ty("Privilege")?,
            process: ty("Process")?,
            module: ty("Module")?,
            target: ty("Target")?,
            credential: ty("Credential")?,
            system,
            actions: Action::ALL
                .iter()
                .map(|a| action(a.as_str()))
                .collect::<Result<_, _>>()?,
            host_call: action("HostCall")?,
            authorizer: Authorizer::new(),
            grouped_actions: grouped.clone(),
            host_call_entities: Entities::from_entities(grouped, None)
                .map_err(|e| e.to_string())?,
        })
    }

    fn uid(ty: &EntityTypeName, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
    }

    /// The principal: a member of its roles and privileges, carrying the credentials and
    /// targets its custom roles were granted use of (`credentials`, `targets`).
    fn user_entity(&self, principal: &Principal) -> Result<Entity, String> {
        let roles = principal.roles.iter().map(|r| Self::uid(&self.role, r));
        let privileges = principal
            .privileges
            .iter()
            .map(|p| Self::uid(&self.privilege, p.as_str()));
        let entity_set = |ty: &EntityTypeName, ids: &std::collections::BTreeSet<String>| {
            RestrictedExpression::new_set(
                ids.iter()
                    .map(|id| RestrictedExpression::new_entity_uid(Self::uid(ty, id))),
            )
        };
        let attrs = [
            (
                "credentials".to_string(),
                entity_set(&self.credential, &principal.credentials),
            ),
            (
                "targets".to_string(),
                entity_set(&self.target, &principal.targets),
            ),
        ];
        Entity::new(
            Self::uid(&self.user, &principal.user),
            attrs.into(),
            roles.chain(privileges).collect(),
        )
        .map_err(|e| e.to_string())
    }

    fn process_entity(&self, process: &ProcessRef<'_>) -> Result<Entity, String> {
        let entity_set = |ty: &EntityTypeName, ids: &std::collections::BTreeSet<String>| {
            let members = ids
                .iter()
                .map(|id| RestrictedExpression::new_entity_uid(Self::uid(ty, id)));
            RestrictedExpression::new_set(members)
        };
        let attrs = [
            (
                "owner".to_string(),
                RestrictedExpression::new_entity_uid(Self::uid(&self.user, process.owner)),
            ),
            (
                "owner_is_admin".to_string(),
                RestrictedExpression::new_bool(process.owner_is_admin),
            ),
            (
                "shared_users".to_string(),
                entity_set(&self.user, process.shared_users),
            ),
            (
                "shared_roles".to_string(),
                entity_set(&self.role, process.shared_roles),
            ),
        ];
        Entity::new(
            Self::uid(&self.process, process.id),
            attrs.into(),
            HashSet::new(),
        )
        .map_err(|e| e.to_string())
    }
    /// The host-call request for `call`, validated against `schema` when one is given.
    fn host_call_request(
        &self,
        call: &HostCallRequest<'_>,
        schema: Option<&Schema>,
    ) -> Result<Request, String> {
        let resource = match (call.target, call.credential) {
            (Some(target), _) => Self::uid(&self.target, target),
            (None, Some(credential)) => Self::uid(&self.credential, credential),
            (None, None) => self.system.clone(),
        };
        let text = |value: Option<&str>| {
            RestrictedExpression::new_string(value.unwrap_or_default().to_string())
        };
        let flag = RestrictedExpression::new_bool;
        let context = Context::from_pairs([
            ("run_id".to_string(), text(Some(call.run_id))),
            ("capability".to_string(), text(Some(call.capability))),
            ("target".to_string(), text(call.target)),
            ("credential".to_string(), text(call.credential)),
            ("command".to_string(), text(call.command)),
            ("path".to_string(), text(call.path)),
            ("module_requested".to_string(), flag(call.module_requested)),
            ("grant_permits".to_string(), flag(call.grant_permits)),
            ("sudo".to_string(), flag(call.sudo)),
        ])
        .map_err(|e| e.to_string())?;
        let principal = Self::uid(&self.module, call.module);
        Request::new(principal, self.host_call.clone(), resource, context, schema)
            .map_err(|e| e.to_string())
    }

    /// Checks once, at load, that the host-call requests this module builds fit the
    /// schema, for every kind of resource; calls are then built without re-validation.
    pub(super) fn check_host_call_shape(&self, schema: &Schema) -> Result<(), String> {
        let probe = HostCallRequest {
            run_id: "probe",
            module: "probe",
            capability: "ssh",
            target: Some("probe"),
            credential: Some("probe"),
            command: Some("probe"),
            path: Some("probe"),
            module_requested: true,
            grant_permits: true,
            sudo: true,
        };
        let credential_only = HostCallRequest {
            target: None,
            ..probe
        };
        let neither = HostCallRequest {
            credential: None,
            ..credential_only
        };
        for call in [probe, credential_only, neither] {
            self.host_call_request(&call, Some(schema))
                .map_err(|e| format!("HostCall requests do not fit the schema: {e}"))?;
        }
        Ok(())
    }

    /// Splits `policies` into those that may apply to an API operation and those that may
    /// apply to a host call, by their action scope. A policy whose scope cannot match a
    /// request's action is never satisfied (nor errors) for it, so leaving it out of that
    /// request's set changes no decision. Scopes naming an action this module does not know
    /// (an action group an administrator added) go to both sets, to stay exact.
    pub(super) fn partition(&self, policies: &PolicySet) -> Result<(PolicySet, PolicySet), String> {
        let mut operations = PolicySet::new();
        let mut host_calls = PolicySet::new();
        for policy in policies.policies() {
            let (operation, host_call) = match policy.action_constraint() {
                ActionConstraint::Any => (true, true),
                ActionConstraint::Eq(uid) => self.reach(std::slice::from_ref(&uid)),
                ActionConstraint::In(uids) => self.reach(&uids),
            };
            if operation {
                operations.add(policy.clone()).map_err(|e| e.to_string())?;
            }
            if host_call {
                host_calls.add(policy.clone()).map_err(|e| e.to_string())?;
            }
        }
        Ok((operations, host_calls))
    }

    /// Whether an action scope of `uids` may match (an API operation, a host call).
    fn reach(&self, uids: &[EntityUid]) -> (bool, bool) {
        let operation = uids.iter().any(|uid| *uid != self.host_call);
        let host_call = uids.iter().any(|uid| !self.actions.contains(uid));
        (operation, host_call)
    }
}

/// The schema's action entities that have a parent (an action group).
fn grouped_actions(schema: &Schema) -> Result<Vec<Entity>, String> {
    let actions = schema.action_entities().map_err(|e| e.to_string())?;
    let in_a_group = |entity: &&Entity| {
        actions
            .ancestors(&entity.uid())
            .is_some_and(|mut a| a.next().is_some())
    };
    Ok(actions.iter().filter(in_a_group).cloned().collect())
}

impl Loaded {
    /// Decides an API operation.
    pub(super) fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        resource: Resource<'_>,
    ) -> PolicyDecision {
        match self.user_request(principal, action, resource) {
            Ok((request, entities)) => self.decide(&self.operations, &request, &entities),
            Err(error) => {
                tracing::warn!(user = %principal.user, action = action.as_str(), %error,
                    "authorization request does not fit the schema; denied");
                PolicyDecision::deny(INVALID_REQUEST)
            }
        }
    }

    fn user_request(
        &self,
        principal: &Principal,
        action: Action,
        resource: Resource<'_>,
    ) -> Result<(Request, Entities), String> {
        let names = &self.names;
        let user = names.user_entity(principal)?;
        let principal_uid = user.uid();
        let (resource_uid, process, context) = match resource {
            Resource::System => (names.system.clone(), None, Context::empty()),
            Resource::Credential(name) => {
                (Names::uid(&names.credential, name), None, Context::empty())
            }
            Resource::Target(name) => (Names::uid(&names.target, name), None, Context::empty()),
            Resource::Process(p) => (Names::uid(&names.process, p.id), Some(p), Context::empty()),
            Resource::Run {
                process: p,
                requester,
            } => {
                let requester = Names::uid(&names.user, requester);
                let pairs = [(
                    "requester".to_string(),
                    RestrictedExpression::new_entity_uid(requester),
                )];
                let context = Context::from_pairs(pairs).map_err(|e| e.to_string())?;
                (Names::uid(&names.process, p.id), Some(p), context)
            }
        };
        let mut entities = vec![user];
        entities.extend(names.grouped_actions.iter().cloned());
        if let Some(process) = process {
            entities.push(names.process_entity(&process)?);
        }
        let action_uid = names
            .actions
            .get(action as usize)
            .cloned()
            .ok_or("unknown action")?;
        let request = Request::new(
            principal_uid,
            action_uid,
            resource_uid,
            context,
            Some(&self.schema),
        )
        .map_err(|e| e.to_string())?;
        let entities = Entities::from_entities(entities, None).map_err(|e| e.to_string())?;
        Ok((request, entities))
    }

    /// Decides a host call.
    pub(super) fn authorize_host_call(&self, call: &HostCallRequest<'_>) -> PolicyDecision {
        let oversize =
            |text: Option<&str>| text.is_some_and(|t| t.len() > MAX_HOST_CALL_TEXT_BYTES);
        if oversize(call.command) || oversize(call.path) {
            return PolicyDecision::deny(OVERSIZE_HOST_CALL);
        }
        // The request's shape was checked against the schema at load
        // (`Names::check_host_call_shape`), so it is not validated again on every call.
        match self.names.host_call_request(call, None) {
            Ok(request) => self.decide(&self.host_calls, &request, &self.names.host_call_entities),
            Err(error) => {
                tracing::warn!(run = call.run_id, capability = call.capability, %error,
                    "host call request does not fit the schema; denied");
                PolicyDecision::deny(INVALID_REQUEST)
            }
        }
    }

    fn decide(&self, set: &PolicySet, request: &Request, entities: &Entities) -> PolicyDecision {
        let response = self.names.authorizer.is_authorized(request, set, entities);
        if let Some(failed) = self.failed_forbids(&response) {
            return PolicyDecision {
                allowed: false,
                policy_ids: failed,
            };
        }
        let allowed = response.decision() == Decision::Allow;
        let mut policy_ids: Vec<String> = response
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();
        if policy_ids.is_empty() {
            policy_ids.push(DEFAULT_DENY.to_string());
        }
        policy_ids.sort();
        PolicyDecision {
            allowed,
            policy_ids,
        }
    }

    /// Forbid policies whose evaluation errored. Cedar ignores a policy that errors, which
    /// for a forbid would turn an error into a permission; we deny instead. A permit that
    /// errors simply does not permit, which is already safe, so it is only logged.
    fn failed_forbids(&self, response: &Response) -> Option<Vec<String>> {
        let mut failed = Vec::new();
        for error in response.diagnostics().errors() {
            let cedar_policy::AuthorizationError::PolicyEvaluationError(error) = error;
            tracing::warn!(%error, "policy evaluation error");
            let id = error.policy_id();
            if self
                .policies
                .policy(id)
                .is_none_or(|p| p.effect() == Effect::Forbid)
            {
                failed.push(id.to_string());
            }
        }
        failed.sort();
        (!failed.is_empty()).then_some(failed)
    }
}
