//! The `DevicePlugin` service the kubelet calls on the plugin's socket.

use crate::allocate::container_response;
use crate::api::device_plugin_server::DevicePlugin;
use crate::api::{
    AllocateRequest, AllocateResponse, ContainerPreferredAllocationResponse, Device,
    DevicePluginOptions, Empty, ListAndWatchResponse, PreStartContainerRequest,
    PreStartContainerResponse, PreferredAllocationRequest, PreferredAllocationResponse, HEALTHY,
    UNHEALTHY,
};
use crate::config::PluginConfig;
use crate::health::DaemonHealth;
use crate::shares::Inventory;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// The plugin's answers: fixed by the configuration and the inventory, except health, which
/// the health task updates.
pub struct Plugin {
    cfg: Arc<PluginConfig>,
    inventory: Inventory,
    health: watch::Receiver<DaemonHealth>,
    /// Turns true when this serving generation ends, so open `ListAndWatch` streams finish and
    /// the server can shut down (the kubelet holds that stream open for as long as it lives).
    stop: watch::Receiver<bool>,
}

impl Plugin {
    pub fn new(
        cfg: Arc<PluginConfig>,
        inventory: Inventory,
        health: watch::Receiver<DaemonHealth>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Plugin {
            cfg,
            inventory,
            health,
            stop,
        }
    }

    /// The device list for a health state.
    pub fn devices(inventory: Inventory, health: DaemonHealth) -> Vec<Device> {
        inventory
            .all()
            .map(|s| Device {
                id: s.to_string(),
                health: if health.gpu_healthy(s.gpu) {
                    HEALTHY
                } else {
                    UNHEALTHY
                }
                .to_owned(),
                topology: None,
            })
            .collect()
    }
}

type DeviceStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for Plugin {
    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(options()))
    }

    type ListAndWatchStream = DeviceStream;

    async fn list_and_watch(&self, _: Request<Empty>) -> Result<Response<DeviceStream>, Status> {
        let inventory = self.inventory;
        let mut health = self.health.clone();
        let mut stop = self.stop.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        // The current list at once, then a new one whenever health changes, until the kubelet
        // hangs up or this generation stops.
        tokio::spawn(async move {
            loop {
                let h = *health.borrow_and_update();
                let list = ListAndWatchResponse {
                    devices: Plugin::devices(inventory, h),
                };
                if tx.send(Ok(list)).await.is_err() {
                    return;
                }
                tokio::select! {
                    r = health.changed() => if r.is_err() { return },
                    _ = stop.wait_for(|s| *s) => return,
                    () = tx.closed() => return,
                }
            }
        });
        let lists = ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(lists)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        let mut out = PreferredAllocationResponse::default();
        for r in request.into_inner().container_requests {
            let chosen = self
                .inventory
                .preferred(
                    &r.available_device_i_ds,
                    &r.must_include_device_i_ds,
                    i64::from(r.allocation_size),
                )
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            out.container_responses
                .push(ContainerPreferredAllocationResponse {
                    device_i_ds: chosen.iter().map(ToString::to_string).collect(),
                });
        }
        Ok(Response::new(out))
    }

    async fn allocate(
        &self,
        request: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let mut out = AllocateResponse::default();
        for r in request.into_inner().container_requests {
            let shares = self
                .inventory
                .parse_request(&r.devices_ids)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            tracing::info!(
                shares = %r.devices_ids.join(","),
                "allocating"
            );
            out.container_responses
                .push(container_response(&self.cfg, &shares));
        }
        Ok(Response::new(out))
    }

    async fn pre_start_container(
        &self,
        _: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        // Not requested in the options: nothing to prepare per container.
        Ok(Response::new(PreStartContainerResponse {}))
    }
}

/// What the plugin tells the kubelet at registration and when asked.
pub fn options() -> DevicePluginOptions {
    DevicePluginOptions {
        pre_start_required: false,
        get_preferred_allocation_available: true,
    }
}
