//! Which entity an unnamed body is (`POST /ingest/message` and `POST /ingest/batch` without an
//! entity): every entity the caller may post is tried with its generated validator, and an
//! entity *matches* when it accepts the body and the body has no member it does not know (so an
//! entity of nullable fields does not swallow every body).

use serde::Serialize;

use super::ApiError;
use super::auth::Client;
use crate::generated::RootEntity;
use crate::runtime::{FieldError, JsonRef};

/// The body member naming the entity (the earlier generator's convention); never an unknown
/// member.
pub const ENTITY_TYPE_MEMBER: &str = "entity_type";

/// A member of a body that its entity does not read, with the member it likely meant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnknownMember {
    /// The member as sent.
    pub member: String,
    /// The entity's member closest to it (`order_id` → `order_key`), if one is close.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub did_you_mean: Option<&'static str>,
}

/// What detection needs of an entity; [`RootEntity`] is one (the tests add fakes).
pub trait Candidate: Copy {
    /// The members a body of it is read from, sorted.
    fn members(self) -> &'static [&'static str];
    /// Its generated validator.
    fn validate(self, body: JsonRef<'_>) -> Result<(), Vec<FieldError>>;
}

impl Candidate for RootEntity {
    fn members(self) -> &'static [&'static str] {
        RootEntity::members(self)
    }
    fn validate(self, body: JsonRef<'_>) -> Result<(), Vec<FieldError>> {
        self.validate_json(body)
    }
}

/// The members of `body` that `entity` does not read, each with a hint.
pub fn unknown_members(entity: impl Candidate, body: JsonRef<'_>) -> Vec<UnknownMember> {
    let known = entity.members();
    body.members()
        .into_iter()
        .flatten()
        .filter(|(name, _)| *name != ENTITY_TYPE_MEMBER && known.binary_search(name).is_err())
        .map(|(name, _)| UnknownMember {
            member: name.to_string(),
            did_you_mean: crate::runtime::closest_name(name, known.iter().copied()),
        })
        .collect()
}

/// Whether `entity` reads every member of `body` (stops at the first it does not).
fn knows_all(entity: impl Candidate, body: JsonRef<'_>) -> bool {
    let known = entity.members();
    body.members()
        .into_iter()
        .flatten()
        .all(|(name, _)| name == ENTITY_TYPE_MEMBER || known.binary_search(&name).is_ok())
}

/// Why no single candidate was found.
#[derive(Debug)]
pub enum NoMatch<C> {
    /// No candidate matches: the closest (see [`detect_among`]) with its problems; `None` when
    /// there were no candidates.
    None(Option<(C, Vec<FieldError>, Vec<UnknownMember>)>),
    /// Several match, in candidate order.
    Several(Vec<C>),
}

/// The one candidate `body` matches.
pub fn detect_among<C: Candidate>(
    candidates: impl Iterator<Item = C> + Clone,
    body: JsonRef<'_>,
) -> Result<C, NoMatch<C>> {
    // Members first (no allocation): only an entity that knows every member can match, and
    // usually one does.
    let mut matching = candidates
        .clone()
        .filter(|c| knows_all(*c, body))
        .filter(|c| c.validate(body).is_ok());
    let Some(first) = matching.next() else {
        // Closest: the most members of the body known or likely meant (`order_id` for
        // `order_key`), then the fewest problems, then the first.
        let members = body.members().into_iter().flatten().count();
        let closest = candidates
            .map(|c| {
                let errors = c.validate(body).err().unwrap_or_default();
                let unknown = unknown_members(c, body);
                let unmatched = unknown.iter().filter(|u| u.did_you_mean.is_none()).count();
                let rank = (
                    std::cmp::Reverse(members - unmatched),
                    errors.len() + unknown.len(),
                );
                (rank, c, errors, unknown)
            })
            .min_by_key(|(rank, ..)| *rank)
            .map(|(_, c, errors, unknown)| (c, errors, unknown));
        return Err(NoMatch::None(closest));
    };
    let others: Vec<C> = matching.collect();
    if others.is_empty() {
        Ok(first)
    } else {
        Err(NoMatch::Several(
            std::iter::once(first).chain(others).collect(),
        ))
    }
}

/// The one entity among those `client` may post that `body` matches; else 400 naming the
/// several that match, or 422 with the closest one's field errors and unknown members.
pub fn detect(client: &Client, body: JsonRef<'_>) -> Result<RootEntity, ApiError> {
    let allowed = RootEntity::ALL
        .iter()
        .copied()
        .filter(|e| client.check_entity(*e).is_ok());
    detect_among(allowed, body).map_err(|no| match no {
        NoMatch::Several(entities) => {
            ApiError::Ambiguous(entities.into_iter().map(RootEntity::snake_name).collect())
        }
        NoMatch::None(Some((entity, errors, unknown))) => ApiError::Invalid {
            entity: Some(entity.name()),
            errors,
            unknown,
            guessed: true,
        },
        NoMatch::None(None) => ApiError::Forbidden("the key may not post any entity".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entities of a test schema: two that share their members, one all-optional.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Fake {
        Reading,
        Sample,
        Note,
    }

    impl Candidate for Fake {
        fn members(self) -> &'static [&'static str] {
            match self {
                Fake::Reading | Fake::Sample => &["sensor", "value"],
                Fake::Note => &["text"],
            }
        }
        fn validate(self, body: JsonRef<'_>) -> Result<(), Vec<FieldError>> {
            let required: &[&str] = match self {
                Fake::Reading | Fake::Sample => &["sensor", "value"],
                Fake::Note => &[],
            };
            let errors: Vec<FieldError> = required
                .iter()
                .filter(|m| body.get(m).is_none())
                .map(|m| FieldError {
                    field: (*m).into(),
                    error: "missing".into(),
                })
                .collect();
            if errors.is_empty() {
                Ok(())
            } else {
                Err(errors)
            }
        }
    }

    const ALL: [Fake; 3] = [Fake::Reading, Fake::Sample, Fake::Note];

    fn detect_in(body: &str) -> Result<Fake, NoMatch<Fake>> {
        let doc = crate::runtime::parse_json_object(body.as_bytes()).expect("JSON");
        detect_among(ALL.into_iter(), doc.root())
    }

    #[test]
    fn one_match_is_the_entity_and_several_are_named() {
        assert_eq!(detect_in(r#"{"text": "hi"}"#).unwrap(), Fake::Note);
        // The all-optional entity does not swallow a body with members it does not know.
        match detect_in(r#"{"sensor": "s1", "value": 3}"#) {
            Err(NoMatch::Several(found)) => assert_eq!(found, [Fake::Reading, Fake::Sample]),
            other => panic!("{other:?}"),
        }
        // Nor one it knows nothing of; `entity_type` is never unknown.
        assert_eq!(
            detect_in(r#"{"entity_type": "note", "text": "x"}"#).unwrap(),
            Fake::Note
        );
    }

    #[test]
    fn no_match_names_the_closest_with_its_problems_and_hints() {
        match detect_in(r#"{"sensr": "s1", "value": 3}"#) {
            Err(NoMatch::None(Some((closest, errors, unknown)))) => {
                assert_eq!(closest, Fake::Reading);
                assert_eq!(errors.len(), 1, "{errors:?}");
                assert_eq!(
                    unknown,
                    [UnknownMember {
                        member: "sensr".into(),
                        did_you_mean: Some("sensor")
                    }]
                );
            }
            other => panic!("{other:?}"),
        }
        let doc = crate::runtime::parse_json_object(b"{}").expect("JSON");
        assert!(matches!(
            detect_among(std::iter::empty::<Fake>(), doc.root()),
            Err(NoMatch::None(None))
        ));
    }
}
