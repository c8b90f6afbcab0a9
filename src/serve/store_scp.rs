//! The DICOM receiver: a C-STORE (and C-ECHO) SCP on dicom-ul's server side, one thread per
//! association, optionally over DICOM TLS.
//!
//! Each C-STORE is answered only after [`Intake::accept`] has stored and journaled the
//! instance: 0x0000 when stored (or already stored), 0xA700 (out of resources) when the
//! queue is full or storing failed, 0xC000 (cannot understand) with an error comment when the
//! instance is malformed. A normal release completes the series it sent (when
//! `complete_at_release`); an abort or a broken connection leaves them to the quiet time.
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::association::server::{AccessControl, ServerAssociation, ServerAssociationOptions};
use dicom_ul::association::{Association, CloseSocket};
use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJServiceUserReason, AssociationRJSource, PDataValue, PDataValueType, Pdu,
    UserIdentity,
};

use super::intake::{Intake, Outcome, text};
use super::metrics::Metrics;
use crate::pacs::Received;
use crate::pacs::dimse::{encode_command, ui, us};

const C_STORE_RQ: u16 = 0x0001;
const C_ECHO_RQ: u16 = 0x0030;
const NO_DATA_SET: u16 = 0x0101;
/// Command sets are a few hundred bytes.
const MAX_COMMAND_BYTES: usize = 64 << 10;

/// Status: success.
pub const SUCCESS: u16 = 0x0000;
/// Status: refused, out of resources (PS3.4 B.2.3).
pub const OUT_OF_RESOURCES: u16 = 0xA700;
/// Status: error, cannot understand.
pub const CANNOT_UNDERSTAND: u16 = 0xC000;
/// Status: unrecognised operation (PS3.7 C.4).
const UNRECOGNIZED_OPERATION: u16 = 0x0211;

/// What every association thread shares.
pub struct ScpContext {
    /// Where instances go.
    pub intake: Arc<Intake>,
    /// Our AE title.
    pub ae_title: String,
    /// Calling AE titles allowed; empty: any.
    pub allowed_callers: Vec<String>,
    /// DICOM TLS, when configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Associations served at once.
    pub max_associations: usize,
    /// Largest data set accepted.
    pub max_object_bytes: usize,
    /// Complete the series of an association when it is released.
    pub complete_at_release: bool,
    /// Longest silence from a peer in the middle of an association.
    pub timeout: Duration,
}

/// The allow-list and our AE title.
struct Gate {
    allowed: Vec<String>,
}

impl AccessControl for Gate {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if called_ae_title.trim() != this_ae_title.trim() {
            tracing::warn!(
                calling_ae_title,
                called_ae_title,
                "association rejected: wrong called AE title"
            );
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if !self.allowed.is_empty() && !self.allowed.iter().any(|a| a == calling_ae_title.trim()) {
            tracing::warn!(calling_ae_title, "association rejected: caller not allowed");
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

/// Accepts connections until the listener fails; each association gets a thread.
pub fn serve(listener: TcpListener, ctx: Arc<ScpContext>) {
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a DICOM connection failed");
                continue;
            }
        };
        let metrics = &ctx.intake.metrics;
        let open = metrics.associations.fetch_add(1, Ordering::SeqCst);
        if open >= ctx.max_associations as u64 {
            metrics.associations.fetch_sub(1, Ordering::SeqCst);
            Metrics::inc(&metrics.associations_rejected);
            tracing::warn!(open, "association rejected: too many at once");
            std::thread::spawn(move || reject_busy(stream));
            continue;
        }
        let ctx = ctx.clone();
        std::thread::spawn(move || {
            let peer = stream
                .peer_addr()
                .map_or_else(|_| "?".into(), |a| a.to_string());
            if let Err(e) = handle(stream, &ctx) {
                tracing::warn!(peer, error = %e, "association ended with an error");
            }
            ctx.intake
                .metrics
                .associations
                .fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Answers an association request with a transient rejection (local limit exceeded), so the
/// sender retries later.
fn reject_busy(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut header = [0u8; 6];
    if stream.read_exact(&mut header).is_err() {
        return;
    }
    let len = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
    let mut body = vec![0u8; len.min(1 << 16)];
    let _ = stream.read_exact(&mut body);
    let rj = Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    });
    let mut out = Vec::new();
    if dicom_ul::pdu::write_pdu(&mut out, &rj).is_ok() {
        let _ = stream.write_all(&out);
    }
}

fn handle(stream: TcpStream, ctx: &ScpContext) -> Result<(), String> {
    let options = ServerAssociationOptions::new()
        .ae_access_control(Gate {
            allowed: ctx.allowed_callers.clone(),
        })
        .ae_title(ctx.ae_title.clone())
        .with_abstract_syntax(uids::VERIFICATION)
        .promiscuous(true)
        .read_timeout(ctx.timeout)
        .write_timeout(ctx.timeout);
    match &ctx.tls {
        None => {
            let association = options.establish(stream).map_err(|e| e.to_string())?;
            Session::new(association, ctx).run()
        }
        Some(tls) => {
            let association = options
                .tls_config(tls.clone())
                .establish_tls(stream)
                .map_err(|e| e.to_string())?;
            Session::new(association, ctx).run()
        }
    }
}

/// One association being served.
struct Session<'a, S: Read + Write + CloseSocket> {
    association: ServerAssociation<S>,
    ctx: &'a ScpContext,
    source: String,
    series: BTreeSet<String>,
}

/// A command and its data set, as received.
struct Message {
    context_id: u8,
    command: InMemDicomObject,
    data: Option<Vec<u8>>,
}

fn field(obj: &InMemDicomObject, tag: Tag) -> Option<u16> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<u16>().ok())
}

enum Next {
    Message(Message),
    Released,
    Aborted,
}

impl<'a, S: Read + Write + CloseSocket> Session<'a, S> {
    fn new(association: ServerAssociation<S>, ctx: &'a ScpContext) -> Self {
        let source = format!("dimse:{}", association.peer_ae_title().trim());
        tracing::info!(caller = association.peer_ae_title(), "association accepted");
        Session {
            association,
            ctx,
            source,
            series: BTreeSet::new(),
        }
    }

    fn run(mut self) -> Result<(), String> {
        loop {
            match self.next()? {
                Next::Released => {
                    let _ = self.association.send(&Pdu::ReleaseRP);
                    if self.ctx.complete_at_release && !self.series.is_empty() {
                        let series: Vec<String> = self.series.iter().cloned().collect();
                        let mut journal = self
                            .ctx
                            .intake
                            .journal
                            .lock()
                            .unwrap_or_else(|p| p.into_inner());
                        journal.close_series(&series).map_err(|e| e.to_string())?;
                    }
                    tracing::info!(
                        source = self.source,
                        series = self.series.len(),
                        "association released"
                    );
                    return Ok(());
                }
                Next::Aborted => {
                    tracing::warn!(source = self.source, "association aborted by the peer");
                    return Ok(());
                }
                Next::Message(m) => self.answer(m)?,
            }
        }
    }

    /// The next whole message, or the end of the association.
    fn next(&mut self) -> Result<Next, String> {
        let mut command: Vec<u8> = Vec::new();
        let mut parsed: Option<(u8, InMemDicomObject)> = None;
        let mut data: Vec<u8> = Vec::new();
        loop {
            let pdu = self.association.receive().map_err(|e| e.to_string())?;
            let values = match pdu {
                Pdu::PData { data } => data,
                Pdu::ReleaseRQ => return Ok(Next::Released),
                Pdu::AbortRQ { .. } => return Ok(Next::Aborted),
                other => return Err(format!("unexpected {}", other.short_description())),
            };
            for PDataValue {
                presentation_context_id,
                value_type,
                is_last,
                data: bytes,
            } in values
            {
                match (&parsed, value_type) {
                    (None, PDataValueType::Command) => {
                        command.extend_from_slice(&bytes);
                        if command.len() > MAX_COMMAND_BYTES {
                            return Err("command set too large".into());
                        }
                        if is_last {
                            let obj = InMemDicomObject::read_dataset_with_ts(
                                &command[..],
                                &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
                            )
                            .map_err(|e| format!("unreadable command: {e}"))?;
                            if field(&obj, tags::COMMAND_DATA_SET_TYPE) == Some(NO_DATA_SET) {
                                return Ok(Next::Message(Message {
                                    context_id: presentation_context_id,
                                    command: obj,
                                    data: None,
                                }));
                            }
                            parsed = Some((presentation_context_id, obj));
                        }
                    }
                    (Some(_), PDataValueType::Data) => {
                        data.extend_from_slice(&bytes);
                        if data.len() > self.ctx.max_object_bytes {
                            return Err(format!(
                                "data set larger than the limit of {} bytes",
                                self.ctx.max_object_bytes
                            ));
                        }
                        if is_last {
                            let (context_id, command) = parsed.take().expect("checked above");
                            return Ok(Next::Message(Message {
                                context_id,
                                command,
                                data: Some(std::mem::take(&mut data)),
                            }));
                        }
                    }
                    (None, PDataValueType::Data) => {
                        return Err("data fragment before its command".into());
                    }
                    (Some(_), PDataValueType::Command) => {
                        return Err("command fragment inside a data set".into());
                    }
                }
            }
        }
    }

    fn answer(&mut self, m: Message) -> Result<(), String> {
        let command_field = field(&m.command, tags::COMMAND_FIELD).unwrap_or(0);
        let message_id = field(&m.command, tags::MESSAGE_ID).unwrap_or(0);
        let class = text(&m.command, tags::AFFECTED_SOP_CLASS_UID);
        let instance = text(&m.command, tags::AFFECTED_SOP_INSTANCE_UID);
        let (status, comment) = match command_field {
            C_ECHO_RQ => (SUCCESS, None),
            C_STORE_RQ => self.store(&m, &class, &instance),
            other => {
                tracing::warn!(command_field = other, "unsupported DIMSE command");
                (UNRECOGNIZED_OPERATION, None)
            }
        };
        let mut elements = vec![
            us(tags::COMMAND_FIELD, command_field | 0x8000),
            us(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id),
            us(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET),
            us(tags::STATUS, status),
        ];
        if !class.is_empty() {
            elements.push(ui(tags::AFFECTED_SOP_CLASS_UID, &class));
        }
        if !instance.is_empty() {
            elements.push(ui(tags::AFFECTED_SOP_INSTANCE_UID, &instance));
        }
        if let Some(c) = comment {
            // ErrorComment is LO: at most 64 characters.
            let c: String = c.chars().take(64).collect();
            elements.push(DataElement::new(
                tags::ERROR_COMMENT,
                VR::LO,
                PrimitiveValue::from(c),
            ));
        }
        let bytes = encode_command(elements).map_err(|e| e.to_string())?;
        self.association
            .send(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: m.context_id,
                    value_type: PDataValueType::Command,
                    is_last: true,
                    data: bytes,
                }],
            })
            .map_err(|e| e.to_string())
    }

    fn store(&mut self, m: &Message, class: &str, instance: &str) -> (u16, Option<String>) {
        let Some(ts) = self
            .association
            .presentation_contexts()
            .iter()
            .find(|pc| pc.id == m.context_id)
            .map(|pc| pc.transfer_syntax.trim_end_matches(['\0', ' ']).to_string())
        else {
            return (
                CANNOT_UNDERSTAND,
                Some("unknown presentation context".into()),
            );
        };
        let Some(data) = m.data.as_deref() else {
            return (CANNOT_UNDERSTAND, Some("C-STORE without a data set".into()));
        };
        let file = match Received::from_dataset(class, instance, &ts, data) {
            Ok(f) => f,
            Err(e) => {
                let reason = format!("cannot frame the data set: {e}");
                Metrics::inc(&self.ctx.intake.metrics.rejected);
                tracing::warn!(source = self.source, reason, "malformed instance rejected");
                return (CANNOT_UNDERSTAND, Some(reason));
            }
        };
        match self
            .ctx
            .intake
            .accept(&file.bytes, Some(instance), &self.source)
        {
            Outcome::Stored { series_uid, .. } => {
                self.series.insert(series_uid);
                (SUCCESS, None)
            }
            Outcome::QueueFull => (OUT_OF_RESOURCES, Some("queue full, try again later".into())),
            Outcome::Failed(e) => (OUT_OF_RESOURCES, Some(e)),
            Outcome::Malformed(e) => (CANNOT_UNDERSTAND, Some(e)),
        }
    }
}
