//! JIT linking: the client's inputs arrive as one blob; the linked image waits here until the
//! client has read it back and dropped it (or the session ends).

use super::dispatch::Answer;
use super::{lock, Session};
use crate::executor::{code, GpuError, GpuResult};
use baton_ipc::protocol::{self as p, Message, Op, LINK_MAX_PENDING};
use baton_ipc::region::REPLY_PAYLOAD;

/// Linked images not yet dropped by the client.
#[derive(Default)]
pub(super) struct Links {
    images: super::tables::Table<Vec<u8>>,
}

impl Session {
    pub(super) fn link_op(&mut self, m: &Message<'_>) -> GpuResult<Answer> {
        let invalid = || GpuError(code::INVALID_VALUE);
        match m.op {
            Op::LinkComplete => {
                let b: p::LinkComplete = m.body().map_err(|_| invalid())?;
                let blob = lock(&self.shared.blobs)
                    .remove(&b.blob)
                    .ok_or(GpuError(code::INVALID_HANDLE))?;
                if self.links.images.len() >= LINK_MAX_PENDING {
                    return Err(GpuError(code::OUT_OF_MEMORY));
                }
                let req = p::LinkRequest::decode(&blob).map_err(|e| {
                    tracing::debug!(session = self.shared.identity.session, error = %e, "link request refused");
                    match e {
                        p::LinkDecodeError::Option(_) | p::LinkDecodeError::InputType(_) => {
                            GpuError(code::NOT_SUPPORTED)
                        }
                        _ => invalid(),
                    }
                })?;
                drop(blob);
                let (r, logs, wall) = self.exec.link(b.device, &req);
                let (id, result, size) = match r {
                    Ok(image) => {
                        let size = image.len() as u64;
                        (self.links.images.insert(image), 0, size)
                    }
                    Err(e) => (0, e.0, 0),
                };
                let mut payload = wall.to_le_bytes().to_vec();
                payload.extend_from_slice(&logs.info);
                payload.extend_from_slice(&logs.error);
                Ok(Answer {
                    values: [id, result as u64, size, logs.info.len() as u64],
                    payload,
                })
            }
            Op::LinkRead => {
                let b: p::LinkRead = m.body().map_err(|_| invalid())?;
                let image = self.links.images.get(b.link)?;
                let start = usize::try_from(b.offset)
                    .ok()
                    .filter(|&o| o <= image.len())
                    .ok_or_else(invalid)?;
                let end = image.len().min(start + REPLY_PAYLOAD);
                Ok(Answer {
                    values: [(end - start) as u64, 0, 0, 0],
                    payload: image[start..end].to_vec(),
                })
            }
            Op::LinkDestroy => {
                let b: p::ObjectId = m.body().map_err(|_| invalid())?;
                self.links.images.remove(b.id).map(|_| Answer::default())
            }
            _ => Err(invalid()),
        }
    }
}
