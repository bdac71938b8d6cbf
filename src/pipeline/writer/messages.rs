//! The writer's output of logical decoding messages and outbox events
//! (`[messages]`, `[outbox]`, docs/outbox.md): records that are not a
//! table's change events, written in the same Kafka transactions and
//! positioned like them (the `siphon.position` header included).

use tracing::info;

use super::{Writer, now_us, push_header};
use crate::avro;
use crate::avro::encode::EnvelopeContext;
use crate::event::{MessageEvent, Position};
use crate::failpoint;
use crate::kafka::{RECORD_OVERHEAD_BYTES, topic};
use crate::pipeline::{ConnectorError, correlation, outbox};

impl Writer {
    /// Publishes a logical decoding message: as an outbox event when it has
    /// the outbox prefix, on the messages topic when `[messages]` takes its
    /// prefix, else not at all.
    pub(super) async fn write_message(
        &mut self,
        message: &MessageEvent,
    ) -> Result<(), ConnectorError> {
        let outbox_prefix = &self.cfg.outbox.message_prefix;
        if !outbox_prefix.is_empty() && message.prefix == *outbox_prefix {
            let routed =
                outbox::from_message(&self.cfg.outbox, &message.content).map_err(|reason| {
                    ConnectorError::Outbox {
                        what: format!(
                            "the logical message with prefix {:?} at {}",
                            message.prefix, message.position
                        ),
                        reason,
                    }
                })?;
            let ts_us = message
                .tx
                .as_ref()
                .map_or_else(now_us, |tx| tx.commit_ts_us);
            return self.produce_outbox(&routed, message.position, ts_us).await;
        }
        let trace_prefix = self.cfg.correlation.traceparent_message_prefix.as_deref();
        if !self.cfg.messages.publishes(&message.prefix) || trace_prefix == Some(&message.prefix) {
            return Ok(());
        }
        let (topic, key_id, value_id) = self.message_plan().await?;
        self.begin_if_needed()?;
        self.key_buf.clear();
        push_header(&mut self.key_buf, key_id);
        avro::message::encode_key(message, &mut self.key_buf);
        self.value_buf.clear();
        push_header(&mut self.value_buf, value_id);
        let ctx = EnvelopeContext {
            connector_version: self.version,
            name: &self.cfg.kafka.topic_prefix,
            db: &self.cfg.postgres.database,
            snapshot: "false",
            now_us: now_us(),
            transaction: None,
        };
        avro::message::encode_value(message, &ctx, &mut self.value_buf);
        let size = self.key_buf.len() + self.value_buf.len();
        let what = || {
            format!(
                "the logical message with prefix {:?} at {}",
                message.prefix, message.position
            )
        };
        let position = correlation::position_text(message.position);
        let headers = [(correlation::POSITION_HEADER, position.as_bytes())];
        self.send_extra(&topic, Some(size), what, &headers).await?;
        if let Some(tx) = &message.tx {
            self.newest_commit_us = Some(tx.commit_ts_us);
        }
        Ok(())
    }

    /// The messages topic and its key and value schema ids: topic ensured
    /// and schemas registered the first time.
    async fn message_plan(&mut self) -> Result<(String, u32, u32), ConnectorError> {
        if let Some(plan) = &self.message_plan {
            return Ok(plan.clone());
        }
        let topic = self.cfg.messages.topic_for(&self.cfg.kafka.topic_prefix);
        self.producer.ensure_topic(&topic, false).await?;
        let key_id = self
            .register(&topic::key_subject(&topic), avro::message::KEY_SCHEMA)
            .await?;
        let value_id = self
            .register(
                &topic::value_subject(&topic),
                &avro::message::value_schema(),
            )
            .await?;
        info!(connector = %self.cfg.name, topic = %topic, key_schema_id = key_id, value_schema_id = value_id, "messages topic ready");
        let plan = (topic, key_id, value_id);
        self.message_plan = Some(plan.clone());
        Ok(plan)
    }

    /// Writes one outbox event: key = aggregate id, value = payload as
    /// written (no schema registry framing), headers `id` and `type`.
    pub(super) async fn produce_outbox(
        &mut self,
        event: &outbox::OutboxEvent,
        position: Position,
        ts_us: i64,
    ) -> Result<(), ConnectorError> {
        let what = || format!("the outbox event {:?} at {position}", event.id);
        let topic = self
            .cfg
            .outbox
            .topic_for(&self.cfg.kafka.topic_prefix, &event.aggregate_type)
            .map_err(|reason| ConnectorError::Outbox {
                what: what(),
                reason,
            })?;
        self.producer.ensure_topic(&topic, false).await?;
        self.begin_if_needed()?;
        self.key_buf.clear();
        self.key_buf
            .extend_from_slice(event.aggregate_id.as_bytes());
        self.value_buf.clear();
        let size = match &event.payload {
            Some(p) if self.cfg.outbox.expand_payload => {
                let (schema, body) =
                    outbox::expand(p, &topic).map_err(|reason| ConnectorError::Outbox {
                        what: what(),
                        reason,
                    })?;
                let id = self.outbox_schema_id(&topic, schema).await?;
                push_header(&mut self.value_buf, id);
                self.value_buf.extend_from_slice(&body);
                Some(self.key_buf.len() + self.value_buf.len())
            }
            Some(p) => {
                self.value_buf.extend_from_slice(p);
                Some(self.key_buf.len() + p.len())
            }
            None => None,
        };
        let position = correlation::position_text(position);
        let headers: [(&str, &[u8]); 3] = [
            ("id", event.id.as_bytes()),
            ("type", event.event_type.as_bytes()),
            (correlation::POSITION_HEADER, position.as_bytes()),
        ];
        self.send_extra(&topic, size, what, &headers).await?;
        self.newest_commit_us = Some(ts_us);
        Ok(())
    }

    /// The schema id of an expanded outbox payload's schema under
    /// `{topic}-value`, registered the first time it is seen.
    async fn outbox_schema_id(
        &mut self,
        topic: &str,
        schema: String,
    ) -> Result<u32, ConnectorError> {
        let subject = topic::value_subject(topic);
        if let Some(id) = self.outbox_schemas.get(&(subject.clone(), schema.clone())) {
            return Ok(*id);
        }
        let id = self.register(&subject, &schema).await?;
        info!(connector = %self.cfg.name, subject = %subject, schema_id = id, "outbox payload schema registered");
        self.outbox_schemas.insert((subject, schema), id);
        Ok(id)
    }

    /// Sends `key_buf` and `value_buf` (a tombstone when `size` is `None`)
    /// to `topic` in the open transaction, after the same size check as
    /// row events; counts it in the batch.
    async fn send_extra(
        &mut self,
        topic: &str,
        size: Option<usize>,
        what: impl Fn() -> String,
        headers: &[(&str, &[u8])],
    ) -> Result<(), ConnectorError> {
        let bytes = size.unwrap_or(self.key_buf.len()) + correlation::headers_len(headers);
        if bytes > self.record_limit {
            return Err(ConnectorError::RecordTooLarge {
                change: what(),
                topic: topic.to_owned(),
                bytes,
                limit: self.record_limit,
                max: self.message_max_bytes,
                overhead: RECORD_OVERHEAD_BYTES,
            });
        }
        let value = size.map(|_| self.value_buf.as_slice());
        self.producer
            .send_with(topic, None, Some(&self.key_buf), value, headers)
            .await
            .map_err(|e| self.refused(e))?;
        failpoint::crash(failpoint::MID_BATCH);
        if let Some(b) = &mut self.batch {
            b.events += 1;
            b.bytes += bytes;
        }
        Ok(())
    }
}
