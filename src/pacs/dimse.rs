//! DIMSE client over `dicom-ul`: C-ECHO, C-FIND (study root), C-GET and C-STORE as a service
//! class user, one association per operation.
//!
//! C-GET rather than C-MOVE: the instances come back on our own association, so the PACS needs
//! no route back to this workstation (no listening port, no AE registration on its side).
//! Storage contexts are proposed one transfer syntax each, so the server can send every
//! instance in the transfer syntax it holds it in: pixel data arrives byte-identical.
//!
//! Nodes with [`TlsSettings`](super::TlsSettings) talk DICOM TLS (PS3.15 B.1) through rustls.
//!
//! Every read and write on the socket is bounded by the node's timeout, and so is the receipt
//! of each whole PDU (a watchdog shuts the socket of a server that trickles one); every
//! message is bounded by [`Limits::max_object_bytes`], every search by [`Limits::max_matches`].
use std::collections::VecDeque;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTable;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::association::Error as UlError;
use dicom_ul::association::client::{ClientAssociation, ClientAssociationOptions, TlsStream};
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu, PresentationContextNegotiated};

use super::node::DimseEndpoint;
use super::query::{InstanceRef, Level, Match, Query};
use super::retrieve::GetTarget;
use super::{Limits, PacsClient, PacsError, Received};
use crate::io::export::atomic::error_chain;

const EXPLICIT_LE: &str = uids::EXPLICIT_VR_LITTLE_ENDIAN;
const IMPLICIT_LE: &str = uids::IMPLICIT_VR_LITTLE_ENDIAN;
/// Explicit VR big endian: retired from the standard, still found in archives.
const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";

/// Transfer syntaxes we accept instances in: the uncompressed ones and every compressed one
/// our decoders read (JPEG baseline, extended, lossless; JPEG-LS; JPEG 2000; RLE).
const RETRIEVE_SYNTAXES: &[&str] = &[
    EXPLICIT_LE,
    IMPLICIT_LE,
    EXPLICIT_BE,
    uids::JPEG_BASELINE8_BIT,
    uids::JPEG_EXTENDED12_BIT,
    uids::JPEG_LOSSLESS,
    uids::JPEG_LOSSLESS_SV1,
    uids::JPEGLS_LOSSLESS,
    uids::JPEGLS_NEAR_LOSSLESS,
    uids::JPEG2000_LOSSLESS,
    uids::JPEG2000,
    uids::RLE_LOSSLESS,
];

/// Storage classes proposed when the server did not name an instance's class.
const COMMON_STORAGE_CLASSES: &[&str] = &[
    uids::CT_IMAGE_STORAGE,
    uids::MR_IMAGE_STORAGE,
    uids::COMPUTED_RADIOGRAPHY_IMAGE_STORAGE,
    uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION,
    uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
    uids::ULTRASOUND_IMAGE_STORAGE,
    uids::ENHANCED_CT_IMAGE_STORAGE,
    uids::ENHANCED_MR_IMAGE_STORAGE,
    uids::BASIC_TEXT_SR_STORAGE,
];

/// At most 128 presentation contexts fit an association; one goes to the C-GET service.
const CONTEXTS_PER_ASSOCIATION: usize = 127;

// Command fields (PS3.7 E.1).
const C_STORE_RQ: u16 = 0x0001;
const C_STORE_RSP: u16 = 0x8001;
const C_GET_RQ: u16 = 0x0010;
const C_GET_RSP: u16 = 0x8010;
const C_FIND_RQ: u16 = 0x0020;
const C_FIND_RSP: u16 = 0x8020;
const C_ECHO_RQ: u16 = 0x0030;
const C_ECHO_RSP: u16 = 0x8030;
/// CommandDataSetType: no data set follows.
const NO_DATA_SET: u16 = 0x0101;
/// CommandDataSetType: a data set follows (any value but 0x0101).
const DATA_SET: u16 = 0x0000;

/// Command sets are a few hundred bytes; anything far larger is not a DIMSE peer.
const MAX_COMMAND_BYTES: usize = 64 << 10;

/// A DIMSE node and the limits for talking to it.
#[derive(Debug, Clone)]
pub struct DimseClient {
    endpoint: DimseEndpoint,
    limits: Limits,
    address: String,
}

/// One received DIMSE message: its command set and, where announced, its data set.
struct Message {
    context_id: u8,
    command: InMemDicomObject,
    data: Option<Vec<u8>>,
}

impl Message {
    fn field(&self, tag: Tag) -> Option<u16> {
        self.command
            .element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_int::<u16>().ok())
    }

    fn text(&self, tag: Tag) -> String {
        element_text(&self.command, tag).unwrap_or_default()
    }
}

/// An association over plain TCP or DICOM TLS.
enum Link {
    Plain(ClientAssociation<TcpStream>),
    Tls(Box<ClientAssociation<TlsStream>>),
}

impl Link {
    fn presentation_contexts(&self) -> &[PresentationContextNegotiated] {
        match self {
            Link::Plain(a) => a.presentation_contexts(),
            Link::Tls(a) => a.presentation_contexts(),
        }
    }

    fn send(&mut self, pdu: &Pdu) -> Result<(), UlError> {
        match self {
            Link::Plain(a) => a.send(pdu),
            Link::Tls(a) => a.send(pdu),
        }
    }

    fn receive(&mut self) -> Result<Pdu, UlError> {
        match self {
            Link::Plain(a) => a.receive(),
            Link::Tls(a) => a.receive(),
        }
    }

    /// Sends `data` as one data set, split into as many P-DATA PDUs as the peer takes.
    fn send_data_set(&mut self, context_id: u8, data: &[u8]) -> std::io::Result<()> {
        match self {
            Link::Plain(a) => {
                let mut writer = a.send_pdata(context_id);
                writer.write_all(data)?;
                writer.finish()
            }
            Link::Tls(a) => {
                let mut writer = a.send_pdata(context_id);
                writer.write_all(data)?;
                writer.finish()
            }
        }
    }

    /// The TCP socket under the association (under the TLS session, for DICOM TLS).
    fn socket(&mut self) -> &TcpStream {
        match self {
            Link::Plain(a) => a.inner_stream(),
            Link::Tls(a) => &a.inner_stream().sock,
        }
    }

    fn release(self) {
        // Callers only release after the operation succeeded; a peer that fumbles the release
        // changes nothing.
        let _ = match self {
            Link::Plain(a) => a.release(),
            Link::Tls(a) => a.release(),
        };
    }

    fn abort(self) {
        let _ = match self {
            Link::Plain(a) => a.abort(),
            Link::Tls(a) => a.abort(),
        };
    }
}

/// What the watchdog thread and the session share.
#[derive(Default)]
struct WatchState {
    /// When the receive in progress must have finished; `None` while none is.
    deadline: Option<Instant>,
    /// The watchdog shut the socket.
    fired: bool,
    /// The session is over.
    stop: bool,
}

/// Shuts the socket when one receive runs past the node's timeout. The socket timeout bounds
/// each read, but a server that trickles a PDU a byte at a time keeps every read short and
/// would otherwise hold the operation for as long as it likes.
struct Watchdog {
    shared: Arc<(Mutex<WatchState>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Watches `socket` (a handle to the association's socket). Without a thread (the system
    /// refused one) the socket timeouts still bound every read.
    fn start(socket: TcpStream) -> Self {
        let shared = Arc::new((Mutex::new(WatchState::default()), Condvar::new()));
        let watched = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("dimse-watchdog".into())
            .spawn(move || {
                let (lock, wake) = &*watched;
                let mut state = lock.lock().unwrap_or_else(PoisonError::into_inner);
                while !state.stop {
                    state = match state.deadline {
                        None => wake.wait(state).unwrap_or_else(PoisonError::into_inner),
                        Some(deadline) => {
                            let now = Instant::now();
                            if now >= deadline {
                                let _ = socket.shutdown(Shutdown::Both);
                                state.fired = true;
                                state.deadline = None;
                                state
                            } else {
                                wake.wait_timeout(state, deadline - now)
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .0
                            }
                        }
                    };
                }
            })
            .ok();
        Watchdog { shared, thread }
    }

    fn update(&self, change: impl FnOnce(&mut WatchState)) {
        let (lock, wake) = &*self.shared;
        change(&mut lock.lock().unwrap_or_else(PoisonError::into_inner));
        wake.notify_one();
    }

    fn arm(&self, timeout: Duration) {
        self.update(|s| s.deadline = Some(Instant::now() + timeout));
    }

    fn disarm(&self) {
        self.update(|s| s.deadline = None);
    }

    fn fired(&self) -> bool {
        let (lock, _) = &*self.shared;
        lock.lock().unwrap_or_else(PoisonError::into_inner).fired
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.update(|s| s.stop = true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An open association and the state of its message exchange.
struct Session<'a> {
    client: &'a DimseClient,
    association: Link,
    watchdog: Option<Watchdog>,
    /// PDVs received after the end of the message being read (servers may pack them).
    pending: VecDeque<PDataValue>,
    next_message_id: u16,
}

fn valid_ae_title(ae: &str) -> bool {
    !ae.trim().is_empty()
        && ae.len() <= 16
        && ae.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'\\')
}

impl DimseClient {
    /// A client for `endpoint`; no association is opened yet. Fails with
    /// [`PacsError::Invalid`] when either AE title is not 1 to 16 printable ASCII characters
    /// without a backslash, or the host is blank.
    pub fn new(endpoint: DimseEndpoint, limits: Limits) -> Result<Self, PacsError> {
        for ae in [&endpoint.called_ae, &endpoint.calling_ae] {
            if !valid_ae_title(ae) {
                return Err(PacsError::Invalid(format!(
                    "AE title {ae:?} must be 1 to 16 printable ASCII characters without '\\'"
                )));
            }
        }
        if endpoint.host.trim().is_empty() {
            return Err(PacsError::Invalid("the node has no host".into()));
        }
        let address = format!("{}@{}:{}", endpoint.called_ae, endpoint.host, endpoint.port);
        Ok(DimseClient {
            endpoint,
            limits,
            address,
        })
    }

    fn timeout_error(&self) -> PacsError {
        PacsError::timeout(&self.address, &self.limits)
    }

    fn protocol_error(&self, reason: impl ToString) -> PacsError {
        PacsError::protocol(&self.address, reason.to_string())
    }

    fn ul_error(&self, e: dicom_ul::association::Error) -> PacsError {
        use dicom_ul::association::Error as E;
        if is_timeout(&e) {
            return self.timeout_error();
        }
        if let Some(alert) = tls_alert(&e) {
            use rustls::AlertDescription as A;
            let hint = match alert {
                A::CertificateRequired | A::BadCertificate | A::UnknownCA | A::AccessDenied => {
                    "; it wants a client certificate it trusts (--client-cert, --client-key)"
                }
                _ => "",
            };
            return PacsError::Connect {
                address: self.address.clone(),
                reason: format!("the server ended the DICOM TLS session ({alert:?}){hint}"),
            };
        }
        match e {
            E::Connect { source, .. } | E::ToAddress { source, .. } => PacsError::Connect {
                address: self.address.clone(),
                reason: source.to_string(),
            },
            E::Rejected { association_rj, .. } => PacsError::Rejected {
                address: self.address.clone(),
                reason: association_rj.source.to_string(),
            },
            E::NoAcceptedPresentationContexts { .. } => PacsError::Unsupported {
                address: self.address.clone(),
                what: "any of the proposed services or transfer syntaxes".into(),
            },
            E::TlsHandshake { source, .. } => PacsError::Connect {
                address: self.address.clone(),
                reason: format!("DICOM TLS handshake failed: {source}"),
            },
            E::InvalidServerName { .. } => PacsError::Invalid(format!(
                "{:?} is not a host name or IP address a TLS certificate can name",
                self.endpoint.host
            )),
            other => self.protocol_error(error_chain(&other)),
        }
    }

    /// [`DimseClient::ul_error`] for a failed plain association. dicom-ul 0.10 reports any
    /// failure to read the A-ASSOCIATE answer (a timeout, a closed connection) as "TLS not
    /// enabled, but peer seems to be sending TLS data" (it probes the empty buffer for TLS),
    /// so the time taken tells a timeout from the rest.
    fn plain_establish_error(&self, e: dicom_ul::association::Error, took: Duration) -> PacsError {
        if matches!(e, dicom_ul::association::Error::TlsNotSupported) {
            if took
                >= self
                    .limits
                    .timeout
                    .saturating_sub(Duration::from_millis(50))
            {
                return self.timeout_error();
            }
            return self.protocol_error(
                "the server closed the connection or answered with TLS; if it speaks DICOM TLS, \
                 give the node TLS settings (--tls, --ca-file)",
            );
        }
        self.ul_error(e)
    }

    /// Opens an association proposing `contexts` (abstract syntax, transfer syntaxes), with
    /// the SCP role asked for the classes in `scp_role_for` (C-GET sub-operations).
    fn open(
        &self,
        contexts: &[(&str, Vec<&str>)],
        scp_role_for: &[&str],
    ) -> Result<Session<'_>, PacsError> {
        let t = self.limits.timeout;
        let mut options = ClientAssociationOptions::new()
            .calling_ae_title(self.endpoint.calling_ae.as_str())
            .called_ae_title(self.endpoint.called_ae.as_str())
            .connection_timeout(t)
            .read_timeout(t)
            .write_timeout(t);
        for (abstract_syntax, syntaxes) in contexts {
            options = options.with_presentation_context(*abstract_syntax, syntaxes.clone());
        }
        for class in scp_role_for {
            options = options.with_role_selection(*class, false, true);
        }
        let address = (self.endpoint.host.as_str(), self.endpoint.port);
        let started = Instant::now();
        let mut association = match &self.endpoint.tls {
            None => Link::Plain(
                options
                    .establish(address)
                    .map_err(|e| self.plain_establish_error(e, started.elapsed()))?,
            ),
            Some(tls) => {
                let config = tls.load()?.rustls_config()?;
                let association = options
                    .tls_config(config)
                    .server_name(self.endpoint.host.trim())
                    .establish_tls(address)
                    .map_err(|e| self.ul_error(e))?;
                Link::Tls(Box::new(association))
            }
        };
        let watchdog = association.socket().try_clone().ok().map(Watchdog::start);
        Ok(Session {
            client: self,
            association,
            watchdog,
            pending: VecDeque::new(),
            next_message_id: 1,
        })
    }

    fn service_session(&self, sop_class: &str) -> Result<(Session<'_>, u8, String), PacsError> {
        let session = self.open(&[(sop_class, vec![EXPLICIT_LE, IMPLICIT_LE])], &[])?;
        let (id, ts) = session
            .accepted(sop_class)
            .ok_or_else(|| PacsError::Unsupported {
                address: self.address.clone(),
                what: sop_class.to_string(),
            })?;
        Ok((session, id, ts))
    }

    /// Lists the instances of one series with an instance-level C-FIND.
    fn series_instances(
        &self,
        study_uid: &str,
        series_uid: &str,
    ) -> Result<Vec<InstanceRef>, PacsError> {
        let query = Query {
            level: Level::Instance,
            study_uid: Some(study_uid.to_string()),
            series_uid: Some(series_uid.to_string()),
            ..Query::default()
        };
        Ok(self
            .find(&query)?
            .iter()
            .filter_map(Match::instance)
            .collect())
    }

    /// Retrieves `wanted` (all of whose classes fit one association) with one C-GET per
    /// instance.
    fn fetch_group(
        &self,
        classes: &[&str],
        wanted: &[&InstanceRef],
        sink: &mut dyn FnMut(Received) -> Result<(), PacsError>,
    ) -> Result<(), PacsError> {
        let get_class = uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_GET;
        let mut contexts = vec![(get_class, vec![EXPLICIT_LE, IMPLICIT_LE])];
        for class in classes {
            for ts in RETRIEVE_SYNTAXES {
                contexts.push((*class, vec![*ts]));
            }
        }
        let mut session = self.open(&contexts, classes)?;
        let (get_id, get_ts) =
            session
                .accepted(get_class)
                .ok_or_else(|| PacsError::Unsupported {
                    address: self.address.clone(),
                    what: "C-GET (study root)".into(),
                })?;
        for inst in wanted {
            let identifier = encode_dataset(
                &[
                    (tags::QUERY_RETRIEVE_LEVEL, VR::CS, "IMAGE"),
                    (tags::STUDY_INSTANCE_UID, VR::UI, &inst.study_uid),
                    (tags::SERIES_INSTANCE_UID, VR::UI, &inst.series_uid),
                    (tags::SOP_INSTANCE_UID, VR::UI, &inst.sop_instance_uid),
                ],
                &get_ts,
            )
            .map_err(|e| self.protocol_error(e))?;
            let result = session.request(get_id, C_GET_RQ, get_class, Some(&identifier));
            let result = result.and_then(|()| session.serve_get(sink));
            if let Err(e) = result {
                session.abort();
                return Err(e);
            }
        }
        session.release();
        Ok(())
    }
}

impl Session<'_> {
    /// The id and transfer syntax of the accepted context for `abstract_syntax`.
    fn accepted(&self, abstract_syntax: &str) -> Option<(u8, String)> {
        self.association
            .presentation_contexts()
            .iter()
            .find(|pc| trim_uid(&pc.abstract_syntax) == abstract_syntax)
            .map(|pc| (pc.id, trim_uid(&pc.transfer_syntax).to_string()))
    }

    fn transfer_syntax_of(&self, context_id: u8) -> Option<String> {
        self.association
            .presentation_contexts()
            .iter()
            .find(|pc| pc.id == context_id)
            .map(|pc| trim_uid(&pc.transfer_syntax).to_string())
    }

    fn send_command(
        &mut self,
        context_id: u8,
        elements: Vec<DataElement<InMemDicomObject>>,
    ) -> Result<(), PacsError> {
        let bytes = encode_command(elements).map_err(|e| self.client.protocol_error(e))?;
        let pdu = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: context_id,
                value_type: PDataValueType::Command,
                is_last: true,
                data: bytes,
            }],
        };
        self.association
            .send(&pdu)
            .map_err(|e| self.client.ul_error(e))
    }

    fn send_data(&mut self, context_id: u8, data: &[u8]) -> Result<(), PacsError> {
        let client = self.client;
        let io_error = |e: std::io::Error| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) {
                client.timeout_error()
            } else {
                client.protocol_error(format!("cannot send data: {e}"))
            }
        };
        self.association
            .send_data_set(context_id, data)
            .map_err(io_error)
    }

    /// Sends a request command (and its data set, if any).
    fn request(
        &mut self,
        context_id: u8,
        command_field: u16,
        sop_class: &str,
        data: Option<&[u8]>,
    ) -> Result<(), PacsError> {
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        let mut elements = vec![
            us(tags::COMMAND_FIELD, command_field),
            ui(tags::AFFECTED_SOP_CLASS_UID, sop_class),
            us(tags::MESSAGE_ID, id),
            us(
                tags::COMMAND_DATA_SET_TYPE,
                if data.is_some() {
                    DATA_SET
                } else {
                    NO_DATA_SET
                },
            ),
        ];
        if command_field != C_ECHO_RQ {
            elements.push(us(tags::PRIORITY, 0));
        }
        self.send_command(context_id, elements)?;
        if let Some(data) = data {
            self.send_data(context_id, data)?;
        }
        Ok(())
    }

    /// Reads one PDU, within the node's timeout for the whole of it.
    fn receive_pdu(&mut self) -> Result<Pdu, PacsError> {
        let client = self.client;
        if let Some(w) = &self.watchdog {
            w.arm(client.limits.timeout);
        }
        let result = self.association.receive();
        if let Some(w) = &self.watchdog {
            w.disarm();
            if result.is_err() && w.fired() {
                return Err(client.timeout_error());
            }
        }
        result.map_err(|e| client.ul_error(e))
    }

    /// Reads the next complete message.
    /// The next P-DATA value, receiving PDUs as needed; an abort, a release or any other PDU
    /// in the middle of a message is an error.
    fn next_pdv(&mut self) -> Result<PDataValue, PacsError> {
        let client = self.client;
        loop {
            if let Some(pdv) = self.pending.pop_front() {
                return Ok(pdv);
            }
            match self.receive_pdu()? {
                Pdu::PData { data } => self.pending.extend(data),
                Pdu::AbortRQ { source } => {
                    return Err(client.protocol_error(format!(
                        "the server aborted the association ({source:?})"
                    )));
                }
                Pdu::ReleaseRQ => {
                    return Err(client.protocol_error("the server released the association early"));
                }
                other => {
                    return Err(
                        client.protocol_error(format!("unexpected {}", other.short_description()))
                    );
                }
            }
        }
    }

    fn receive(&mut self) -> Result<Message, PacsError> {
        let client = self.client;
        let mut command = Vec::new();
        let mut parsed: Option<(u8, InMemDicomObject)> = None;
        let mut data = Vec::new();
        loop {
            let pdv = self.next_pdv()?;
            match (&parsed, pdv.value_type) {
                (None, PDataValueType::Command) => {
                    command.extend_from_slice(&pdv.data);
                    if command.len() > MAX_COMMAND_BYTES {
                        return Err(PacsError::TooLarge {
                            address: client.address.clone(),
                            limit: MAX_COMMAND_BYTES,
                            unit: "bytes in a command",
                        });
                    }
                    if pdv.is_last {
                        let obj = InMemDicomObject::read_dataset_with_ts(
                            &command[..],
                            &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
                        )
                        .map_err(|e| client.protocol_error(format!("unreadable command: {e}")))?;
                        let message = Message {
                            context_id: pdv.presentation_context_id,
                            command: obj,
                            data: None,
                        };
                        if message.field(tags::COMMAND_DATA_SET_TYPE) == Some(NO_DATA_SET) {
                            return Ok(message);
                        }
                        parsed = Some((message.context_id, message.command));
                    }
                }
                (Some(_), PDataValueType::Data) => {
                    data.extend_from_slice(&pdv.data);
                    if data.len() > client.limits.max_object_bytes {
                        return Err(PacsError::TooLarge {
                            address: client.address.clone(),
                            limit: client.limits.max_object_bytes,
                            unit: "bytes in one object",
                        });
                    }
                    if pdv.is_last {
                        let (context_id, command) = parsed
                            .take()
                            .unwrap_or_else(|| (0, InMemDicomObject::new_empty()));
                        return Ok(Message {
                            context_id,
                            command,
                            data: Some(std::mem::take(&mut data)),
                        });
                    }
                }
                (None, PDataValueType::Data) => {
                    return Err(client.protocol_error("data fragment before its command"));
                }
                (Some(_), PDataValueType::Command) => {
                    return Err(client.protocol_error("command fragment inside a data set"));
                }
            }
        }
    }

    /// Reads the response to a request and checks its command field and status.
    fn response(&mut self, expected: u16, operation: &'static str) -> Result<Message, PacsError> {
        let message = self.receive()?;
        let field = message.field(tags::COMMAND_FIELD);
        if field != Some(expected) {
            return Err(self.client.protocol_error(format!(
                "expected a {operation} response, got command field {field:?}"
            )));
        }
        Ok(message)
    }

    /// Answers the C-STORE sub-operations of a C-GET until its final response.
    fn serve_get(
        &mut self,
        sink: &mut dyn FnMut(Received) -> Result<(), PacsError>,
    ) -> Result<(), PacsError> {
        loop {
            let message = self.receive()?;
            match message.field(tags::COMMAND_FIELD) {
                Some(C_STORE_RQ) => self.accept_store(message, sink)?,
                Some(C_GET_RSP) => match message.field(tags::STATUS) {
                    Some(0xFF00) => {}
                    Some(0x0000) => return Ok(()),
                    status => return Err(self.client.status_error("C-GET", status, &message)),
                },
                other => {
                    return Err(self.client.protocol_error(format!(
                        "unexpected command field {other:?} during C-GET"
                    )));
                }
            }
        }
    }

    fn accept_store(
        &mut self,
        message: Message,
        sink: &mut dyn FnMut(Received) -> Result<(), PacsError>,
    ) -> Result<(), PacsError> {
        let client = self.client;
        let class = message.text(tags::AFFECTED_SOP_CLASS_UID);
        let instance = message.text(tags::AFFECTED_SOP_INSTANCE_UID);
        let ts = self
            .transfer_syntax_of(message.context_id)
            .ok_or_else(|| client.protocol_error("C-STORE on an unknown presentation context"))?;
        let data = message
            .data
            .as_deref()
            .ok_or_else(|| client.protocol_error("C-STORE without a data set"))?;
        let received = Received::from_dataset(&class, &instance, &ts, data)
            .map_err(|e| client.protocol_error(e))?;
        sink(received)?;
        let id = message.field(tags::MESSAGE_ID).unwrap_or(0);
        self.send_command(
            message.context_id,
            vec![
                us(tags::COMMAND_FIELD, C_STORE_RSP),
                ui(tags::AFFECTED_SOP_CLASS_UID, &class),
                us(tags::MESSAGE_ID_BEING_RESPONDED_TO, id),
                us(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET),
                us(tags::STATUS, 0),
                ui(tags::AFFECTED_SOP_INSTANCE_UID, &instance),
            ],
        )
    }

    fn release(self) {
        self.association.release();
    }

    fn abort(self) {
        self.association.abort();
    }
}

impl DimseClient {
    fn status_error(&self, operation: &'static str, status: Option<u16>, m: &Message) -> PacsError {
        let comment = m.text(tags::ERROR_COMMENT);
        let failed = m
            .field(tags::NUMBER_OF_FAILED_SUBOPERATIONS)
            .filter(|&n| n > 0);
        let mut detail = String::new();
        if let Some(n) = failed {
            detail.push_str(&format!(", {n} sub-operations failed"));
        }
        if !comment.is_empty() {
            detail.push_str(&format!(" ({comment})"));
        }
        PacsError::Status {
            address: self.address.clone(),
            operation,
            status: status.unwrap_or(0xFFFF),
            comment: detail,
        }
    }
}

impl PacsClient for DimseClient {
    fn echo(&self) -> Result<(), PacsError> {
        let (mut session, id, _) = self.service_session(uids::VERIFICATION)?;
        session.request(id, C_ECHO_RQ, uids::VERIFICATION, None)?;
        let response = session.response(C_ECHO_RSP, "C-ECHO")?;
        match response.field(tags::STATUS) {
            Some(0) => {
                session.release();
                Ok(())
            }
            status => Err(self.status_error("C-ECHO", status, &response)),
        }
    }

    fn find(&self, query: &Query) -> Result<Vec<Match>, PacsError> {
        query.validate()?;
        let class = uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND;
        let (mut session, id, ts) = self.service_session(class)?;
        let keys = query.keys();
        let mut elements: Vec<(Tag, VR, &str)> =
            vec![(tags::QUERY_RETRIEVE_LEVEL, VR::CS, query.level.dicom_name())];
        elements.extend(keys.iter().map(|k| (k.tag, k.vr, k.value.as_str())));
        let identifier = encode_dataset(&elements, &ts).map_err(|e| self.protocol_error(e))?;
        session.request(id, C_FIND_RQ, class, Some(&identifier))?;
        let syntax = registry_syntax(&ts).ok_or_else(|| self.protocol_error("unknown syntax"))?;
        let mut matches = Vec::new();
        loop {
            let response = session.response(C_FIND_RSP, "C-FIND")?;
            match response.field(tags::STATUS) {
                Some(0xFF00 | 0xFF01) => {
                    let data = response
                        .data
                        .as_deref()
                        .ok_or_else(|| self.protocol_error("pending C-FIND without a match"))?;
                    let obj = InMemDicomObject::read_dataset_with_ts(data, syntax)
                        .map_err(|e| self.protocol_error(format!("unreadable match: {e}")))?;
                    let found = Match::from_lookup(query.level, |t| element_text(&obj, t))
                        .map_err(|e| self.protocol_error(e))?;
                    matches.push(found);
                    if matches.len() > self.limits.max_matches {
                        session.abort();
                        return Err(PacsError::TooLarge {
                            address: self.address.clone(),
                            limit: self.limits.max_matches,
                            unit: "matches",
                        });
                    }
                }
                Some(0) => break,
                status => return Err(self.status_error("C-FIND", status, &response)),
            }
        }
        session.release();
        Ok(matches)
    }

    fn instances(&self, target: &GetTarget) -> Result<Vec<InstanceRef>, PacsError> {
        target.validate()?;
        if let Some(series) = &target.series_uid {
            return self.series_instances(&target.study_uid, series);
        }
        let query = Query {
            level: Level::Series,
            study_uid: Some(target.study_uid.clone()),
            ..Query::default()
        };
        let mut all = Vec::new();
        for series in self.find(&query)? {
            all.extend(self.series_instances(&target.study_uid, &series.series_uid)?);
        }
        Ok(all)
    }

    fn fetch(
        &self,
        wanted: &[InstanceRef],
        sink: &mut dyn FnMut(Received) -> Result<(), PacsError>,
    ) -> Result<(), PacsError> {
        // Group by class so each association proposes only the classes it will receive.
        let per_association = CONTEXTS_PER_ASSOCIATION / RETRIEVE_SYNTAXES.len();
        let (unknown, known): (Vec<&InstanceRef>, Vec<&InstanceRef>) =
            wanted.iter().partition(|i| i.sop_class_uid.is_empty());
        let mut classes: Vec<&str> = known.iter().map(|i| i.sop_class_uid.as_str()).collect();
        classes.sort_unstable();
        classes.dedup();
        for group in classes.chunks(per_association) {
            let members: Vec<&InstanceRef> = known
                .iter()
                .copied()
                .filter(|i| group.contains(&i.sop_class_uid.as_str()))
                .collect();
            self.fetch_group(group, &members, sink)?;
        }
        if !unknown.is_empty() {
            self.fetch_group(COMMON_STORAGE_CLASSES, &unknown, sink)?;
        }
        Ok(())
    }

    fn store(&self, path: &Path) -> Result<String, PacsError> {
        let file = FileForStore::read(path)?;
        let mut syntaxes = vec![file.transfer_syntax.as_str()];
        if is_native(&file.transfer_syntax) {
            syntaxes.extend(
                [EXPLICIT_LE, IMPLICIT_LE]
                    .iter()
                    .filter(|s| **s != file.transfer_syntax),
            );
        }
        let mut session = self.open(&[(file.sop_class_uid.as_str(), syntaxes)], &[])?;
        let (id, ts) =
            session
                .accepted(&file.sop_class_uid)
                .ok_or_else(|| PacsError::Unsupported {
                    address: self.address.clone(),
                    what: format!(
                        "storing {} in transfer syntax {}",
                        file.sop_class_uid, file.transfer_syntax
                    ),
                })?;
        let data = file.dataset_in(path, &ts)?;
        let client = self;
        let result = (|| {
            let message_id = session.next_message_id;
            session.next_message_id += 1;
            session.send_command(
                id,
                vec![
                    us(tags::COMMAND_FIELD, C_STORE_RQ),
                    ui(tags::AFFECTED_SOP_CLASS_UID, &file.sop_class_uid),
                    us(tags::MESSAGE_ID, message_id),
                    us(tags::PRIORITY, 0),
                    us(tags::COMMAND_DATA_SET_TYPE, DATA_SET),
                    ui(tags::AFFECTED_SOP_INSTANCE_UID, &file.sop_instance_uid),
                ],
            )?;
            session.send_data(id, &data)?;
            let response = session.response(C_STORE_RSP, "C-STORE")?;
            match response.field(tags::STATUS) {
                // Success, and the warnings that still mean "stored" (coercion, elements
                // discarded, data set does not match the class).
                Some(0x0000 | 0x0001 | 0xB000 | 0xB006 | 0xB007) => Ok(()),
                status => Err(client.status_error("C-STORE", status, &response)),
            }
        })();
        match result {
            Ok(()) => {
                session.release();
                Ok(file.sop_instance_uid)
            }
            Err(e) => {
                session.abort();
                Err(e)
            }
        }
    }
}

/// A local DICOM file about to be stored: its identity and where its data set starts.
pub(crate) struct FileForStore {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax: String,
    pub bytes: Vec<u8>,
    dataset_offset: usize,
}

impl FileForStore {
    /// Reads a Part 10 file; fails on anything else (a store needs the file meta group).
    pub fn read(path: &Path) -> Result<Self, PacsError> {
        let bytes = std::fs::read(path).map_err(|e| PacsError::read_file(path, e))?;
        if bytes.len() < 144 || &bytes[128..132] != b"DICM" {
            return Err(PacsError::read_file(path, "not a DICOM Part 10 file"));
        }
        let meta =
            FileMetaTable::from_reader(&bytes[128..]).map_err(|e| PacsError::read_file(path, e))?;
        let dataset_offset = 132 + 12 + meta.information_group_length as usize;
        if dataset_offset > bytes.len() {
            return Err(PacsError::read_file(
                path,
                "file meta group runs past the end",
            ));
        }
        let text = |s: &str| trim_uid(s).to_string();
        Ok(FileForStore {
            sop_class_uid: text(meta.media_storage_sop_class_uid()),
            sop_instance_uid: text(meta.media_storage_sop_instance_uid()),
            transfer_syntax: text(meta.transfer_syntax()),
            bytes,
            dataset_offset,
        })
    }

    /// The data set as stored in the file.
    pub fn dataset(&self) -> &[u8] {
        &self.bytes[self.dataset_offset..]
    }

    /// The data set in transfer syntax `ts`: as stored when it matches, else re-encoded
    /// (only ever between uncompressed syntaxes, the only alternatives we propose).
    fn dataset_in(&self, path: &Path, ts: &str) -> Result<Vec<u8>, PacsError> {
        if ts == self.transfer_syntax {
            return Ok(self.dataset().to_vec());
        }
        let syntax = registry_syntax(ts)
            .ok_or_else(|| PacsError::read_file(path, format!("unknown transfer syntax {ts}")))?;
        let obj = dicom_object::from_reader(&self.bytes[128..])
            .map_err(|e| PacsError::read_file(path, e))?;
        let mut out = Vec::new();
        obj.write_dataset_with_ts(&mut out, syntax)
            .map_err(|e| PacsError::read_file(path, e))?;
        Ok(out)
    }
}

fn is_native(ts: &str) -> bool {
    [EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE].contains(&ts)
}

fn registry_syntax(uid: &str) -> Option<&'static dicom_encoding::TransferSyntax> {
    use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
    TransferSyntaxRegistry.get(uid)
}

fn trim_uid(s: &str) -> &str {
    s.trim_end_matches(['\0', ' '])
}

fn element_text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).trim_start().to_string())
        .filter(|s| !s.is_empty())
}

pub(crate) fn us(tag: Tag, v: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::from(v))
}

pub(crate) fn ui(tag: Tag, v: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::UI, PrimitiveValue::from(v))
}

/// Why a command or identifier could not be encoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EncodeError {
    /// The data set writer failed.
    #[error("{0}")]
    Write(Box<dicom_object::WriteError>),
    /// A transfer syntax the registry does not know.
    #[error("unknown transfer syntax {0}")]
    UnknownSyntax(String),
}

impl From<dicom_object::WriteError> for EncodeError {
    fn from(e: dicom_object::WriteError) -> Self {
        EncodeError::Write(Box::new(e))
    }
}

/// A command set in implicit VR little endian, led by its group length (PS3.7 6.3.1).
pub(crate) fn encode_command(
    elements: Vec<DataElement<InMemDicomObject>>,
) -> Result<Vec<u8>, EncodeError> {
    let ts = IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let mut body = Vec::new();
    InMemDicomObject::from_element_iter(elements).write_dataset_with_ts(&mut body, &ts)?;
    let length = DataElement::new(
        tags::COMMAND_GROUP_LENGTH,
        VR::UL,
        PrimitiveValue::from(body.len() as u32),
    );
    let mut out = Vec::with_capacity(body.len() + 12);
    InMemDicomObject::from_element_iter([length]).write_dataset_with_ts(&mut out, &ts)?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// An identifier data set (empty values are return keys) in transfer syntax `ts`.
fn encode_dataset(elements: &[(Tag, VR, &str)], ts: &str) -> Result<Vec<u8>, EncodeError> {
    let syntax = registry_syntax(ts).ok_or_else(|| EncodeError::UnknownSyntax(ts.to_string()))?;
    let obj = InMemDicomObject::from_element_iter(elements.iter().map(|&(tag, vr, value)| {
        let value = if value.is_empty() {
            PrimitiveValue::Empty
        } else {
            PrimitiveValue::from(value)
        };
        DataElement::new(tag, vr, value)
    }));
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, syntax)?;
    Ok(out)
}

/// Whether an error was caused by a socket timeout (Linux reports read timeouts as
/// `WouldBlock`).
fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            )
        {
            return true;
        }
        current = err.source();
    }
    false
}

/// The TLS alert the server ended the session with, if that is what `e` comes down to.
fn tls_alert(e: &(dyn std::error::Error + 'static)) -> Option<rustls::AlertDescription> {
    let mut current = Some(e);
    while let Some(err) = current {
        let tls = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::AlertReceived(alert)) = tls {
            return Some(*alert);
        }
        current = err.source();
    }
    None
}
