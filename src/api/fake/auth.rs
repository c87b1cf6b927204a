//! What the recording fake answers as the API server's authorities: TokenRequest needs no
//! service account and gets a deterministic fake token (`fake-token-<ns>-<sa>-<n>`, `n`
//! counting the tokens issued) expiring `expirationSeconds` (default 3600) from now;
//! TokenReview accepts the tokens given to `accept_token`; SubjectAccessReview allows the
//! users given to `allow_user`. Runs under the fake's store lock.

use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestStatus, TokenReview, TokenReviewStatus,
};
use k8s_openapi::api::authorization::v1::{SubjectAccessReview, SubjectAccessReviewStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::Store;
use crate::api::store::status_error;
use crate::api::ApiError;

/// Lifetime of a token whose request names none (the API's default).
const DEFAULT_TOKEN_SECONDS: i64 = 3600;

/// Issues a token for `service_account`, recording the request.
pub(super) fn issue_token(
    store: &mut Store,
    namespace: &str,
    service_account: &str,
    request: &TokenRequest,
) -> Result<TokenRequest, ApiError> {
    let seconds = request
        .spec
        .expiration_seconds
        .unwrap_or(DEFAULT_TOKEN_SECONDS);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let expires = now
        .checked_add(seconds)
        .and_then(|secs| Timestamp::new(secs, 0).ok())
        .ok_or_else(|| {
            let message = format!("spec.expirationSeconds: Invalid value: {seconds}");
            status_error("POST", 422, "Invalid", message)
        })?;
    store.tokens += 1;
    store
        .token_requests
        .push((namespace.into(), service_account.into(), request.clone()));
    let mut answer = request.clone();
    answer.metadata.namespace = Some(namespace.to_string());
    answer.metadata.name = Some(service_account.to_string());
    answer.status = Some(TokenRequestStatus {
        token: format!("fake-token-{namespace}-{service_account}-{}", store.tokens),
        expiration_timestamp: Time(expires),
    });
    Ok(answer)
}

/// TokenReview: authenticated, as its user, when the token was accepted.
pub(super) fn review_token(store: &Store, review: &TokenReview) -> TokenReview {
    let token = review.spec.token.as_deref().unwrap_or_default();
    let user = store
        .review_tokens
        .iter()
        .find(|(t, _)| t == token)
        .map(|(_, u)| u.clone());
    let mut answer = review.clone();
    answer.status = Some(TokenReviewStatus {
        authenticated: Some(user.is_some()),
        user,
        ..TokenReviewStatus::default()
    });
    answer
}

/// SubjectAccessReview: allowed when the user was allowed.
pub(super) fn review_access(store: &Store, review: &SubjectAccessReview) -> SubjectAccessReview {
    let user = review.spec.user.as_deref().unwrap_or_default();
    let allowed = store.allowed_users.iter().any(|u| u == user);
    let mut answer = review.clone();
    answer.status = Some(SubjectAccessReviewStatus {
        allowed,
        ..SubjectAccessReviewStatus::default()
    });
    answer
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{Call, FakeClient};
    use super::*;
    use crate::api::KubeClient;

    #[test]
    fn create_token_returns_a_fake_token_with_its_expiry() {
        let fake = FakeClient::new();
        let request: TokenRequest = serde_json::from_value(json!({
            "spec": {"audiences": ["api"], "expirationSeconds": 7200},
        }))
        .unwrap();
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let answer = fake.create_token("ns", "default", &request).unwrap();
        let status = answer.status.unwrap();
        assert_eq!(status.token, "fake-token-ns-default-1");
        let expires = status.expiration_timestamp.0.as_second();
        assert!(
            (before + 7200..=before + 7202).contains(&expires),
            "{expires}"
        );
        assert_eq!(answer.spec.audiences, ["api"]);

        let default_life = fake
            .create_token("ns", "sa", &TokenRequest::default())
            .unwrap();
        let status = default_life.status.unwrap();
        assert_eq!(status.token, "fake-token-ns-sa-2");
        let expires = status.expiration_timestamp.0.as_second();
        assert!(
            (before + 3600..=before + 3602).contains(&expires),
            "{expires}"
        );
        assert_eq!(fake.tokens_issued(), 2);

        let boom = || crate::api::store::status_error("POST", 403, "Forbidden", "no".into());
        fake.inject_error("create_token", boom());
        let err = fake.create_token("ns", "sa", &request).unwrap_err();
        assert_eq!(err.code(), Some(403));
        assert_eq!(fake.tokens_issued(), 2);
        assert_eq!(
            fake.calls(),
            vec![
                Call::CreateToken {
                    namespace: "ns".into(),
                    service_account: "default".into(),
                    audiences: vec!["api".into()],
                    expiration_seconds: Some(7200),
                },
                Call::CreateToken {
                    namespace: "ns".into(),
                    service_account: "sa".into(),
                    audiences: vec![],
                    expiration_seconds: None,
                },
                Call::CreateToken {
                    namespace: "ns".into(),
                    service_account: "sa".into(),
                    audiences: vec!["api".into()],
                    expiration_seconds: Some(7200),
                },
            ]
        );
    }
}
