//! A blocking client for the server's HTTP API. Every request carries the token, when the CLI
//! was given one, as `Authorization: Bearer TOKEN`.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::CliError;
use crate::http::{ErrorResponse, FleetResponse};
use crate::store::{AgentDetail, AgentSummary};

/// How long one request may take, from connecting to reading the whole body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest response body read, in bytes. A fleet list of 100,000 agents is about 100 MiB of
/// JSON, by an estimate of 1 KiB per agent.
const MAX_RESPONSE_BYTES: u64 = 256 * 1024 * 1024;

pub struct ApiClient {
    base_url: String,
    agent: ureq::Agent,
    /// The `Authorization` header value, `Bearer TOKEN`.
    authorization: Option<String>,
}

impl ApiClient {
    pub fn new(base_url: &str, token: Option<&str>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .new_agent();
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            agent,
            authorization: token.map(|token| format!("Bearer {token}")),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Fetches every agent's summary.
    pub fn fleet(&self) -> Result<Vec<AgentSummary>, CliError> {
        let response: Option<FleetResponse> = self.get("/api/v1/agents")?;
        let url = self.url("/api/v1/agents");
        match response {
            Some(response) => Ok(response.agents),
            None => Err(CliError::Api {
                url,
                status: 404,
                message: "the server has no fleet API; is it a tidegate server?".to_owned(),
            }),
        }
    }

    /// Fetches one agent by its exact id, or `None` when the server has no such agent.
    pub fn agent(&self, agent_id: &str) -> Result<Option<AgentDetail>, CliError> {
        self.get(&format!("/api/v1/agents/{agent_id}"))
    }

    /// Sends `body` in a POST request with `Content-Type: application/octet-stream` and the
    /// extra `headers`, and returns the status and the response body, whatever the status.
    pub fn post_octets(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, String), CliError> {
        self.post(path, "application/octet-stream", headers, body)
    }

    /// Sends `body` as JSON in a POST request and returns the status and the response body,
    /// whatever the status.
    pub fn post_json_bytes(&self, path: &str, body: &[u8]) -> Result<(u16, String), CliError> {
        self.post(path, "application/json", &[], body)
    }

    fn post(
        &self,
        path: &str,
        content_type: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, String), CliError> {
        let url = self.url(path);
        let mut request = self.agent.post(&url).header("Content-Type", content_type);
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send(body);
        self.read_response(&url, response)
    }

    /// Sends `body` as JSON in a POST request and decodes the JSON response. A status other than
    /// 2xx is an error that carries the server's message.
    pub fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        let url = self.url(path);
        let mut request = self.agent.post(&url);
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let response = request.send_json(body);
        let (status, body) = self.read_response(&url, response)?;
        decode_success(url, status, &body)
    }

    /// Fetches `path` as JSON. A status other than 2xx, 404 included, is an error.
    pub fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        let url = self.url(path);
        let (status, body) = self.send_get(&url)?;
        decode_success(url, status, &body)
    }

    /// Returns the status and body of a sent request, whatever the status.
    fn read_response(
        &self,
        url: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, String), CliError> {
        let mut response = match response {
            Ok(response) => response,
            Err(error @ (ureq::Error::BadUri(_) | ureq::Error::Http(_))) => {
                return Err(CliError::InvalidServerUrl {
                    url: self.base_url.clone(),
                    source: Box::new(error),
                })
            }
            Err(error) => {
                return Err(CliError::Unreachable {
                    url: self.base_url.clone(),
                    source: Box::new(error),
                })
            }
        };
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_string()
            .map_err(|error| CliError::Response {
                url: url.to_owned(),
                source: Box::new(error),
            })?;
        Ok((status, body))
    }

    /// Sends `body` as JSON in a POST request and returns the status and the response body,
    /// whatever the status.
    pub fn post_json_status<B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(u16, String), CliError> {
        let url = self.url(path);
        let mut request = self.agent.post(&url);
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let response = request.send_json(body);
        self.read_response(&url, response)
    }

    fn send_get(&self, url: &str) -> Result<(u16, String), CliError> {
        let mut request = self.agent.get(url);
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let response = request.call();
        self.read_response(url, response)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Sends a GET request and decodes the JSON body. Returns `None` on 404.
    pub(super) fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, CliError> {
        let url = self.url(path);
        let (status, body) = self.send_get(&url)?;
        if status == 404 {
            return Ok(None);
        }
        decode_success(url, status, &body).map(Some)
    }
}

/// Decodes a 2xx JSON body, or turns another status into an error with the server's message.
fn decode_success<T: DeserializeOwned>(
    url: String,
    status: u16,
    body: &str,
) -> Result<T, CliError> {
    if !(200..300).contains(&status) {
        let message = serde_json::from_str::<ErrorResponse>(body)
            .map(|response| response.error)
            .unwrap_or_else(|_| body.chars().take(200).collect());
        if status == 401 {
            return Err(CliError::Unauthorized { url, message });
        }
        return Err(CliError::Api {
            url,
            status,
            message,
        });
    }
    serde_json::from_str(body).map_err(|source| CliError::InvalidJson { url, source })
}
