//! [`CsrClient`] for [`RestClient`]: creating a CertificateSigningRequest, reading it, and
//! watching it by name until it is issued.

use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;

use super::verbs::{WATCH_DEFAULT_BOUND_SECS, WATCH_GRACE};
use super::RestClient;
use crate::api::request::{self, list_query};
use crate::api::stats::Op;
use crate::api::watch::decode_watch;
use crate::api::{ApiError, CsrClient, ListOptions, WatchStream};

const CSR_PATH: &str = "/apis/certificates.k8s.io/v1/certificatesigningrequests";

impl CsrClient for RestClient {
    fn create_csr(
        &self,
        csr: &CertificateSigningRequest,
    ) -> Result<CertificateSigningRequest, ApiError> {
        self.write(Op::CreateCsr, CSR_PATH, csr)
    }

    fn get_csr(&self, name: &str) -> Result<CertificateSigningRequest, ApiError> {
        let path = format!("{CSR_PATH}/{}", request::encode(name));
        self.get(Op::GetCsr, &path)
    }

    fn watch_csr(
        &self,
        name: &str,
        resource_version: &str,
        timeout_seconds: u32,
    ) -> Result<WatchStream<CertificateSigningRequest>, ApiError> {
        let opts = ListOptions {
            field_selector: Some(format!("metadata.name={name}")),
            resource_version: Some(resource_version.to_string()),
            timeout_seconds: Some(timeout_seconds),
            ..Default::default()
        };
        let secs = u64::from(timeout_seconds).min(WATCH_DEFAULT_BOUND_SECS);
        let timeout = Duration::from_secs(secs) + WATCH_GRACE;
        let query = list_query(&opts, true);
        let resp = self.send(Op::WatchCsrs, CSR_PATH, &query, None, timeout)?;
        Ok(decode_watch(resp, format!("watch {CSR_PATH}")))
    }
}
