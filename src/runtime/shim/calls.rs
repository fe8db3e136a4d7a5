//! The shim's task service in one table: its names, and for each request message the method
//! it goes to and the message the shim answers. A call is typed by its request, so a method
//! name cannot be misspelt at a call site nor an answer decoded as the wrong message.

use super::proto::shim as pb;
use protobuf::well_known_types::empty::Empty;
use protobuf::Message;

/// The task service as containerd 1.6/1.7 shims serve it.
pub const TASK_V2: &str = "containerd.task.v2.Task";
/// The task service as containerd 2.x shims serve it (the same messages).
pub const TASK_V3: &str = "containerd.task.v3.Task";

/// A request of the task service: the method it is sent to and the message the shim answers.
pub trait TaskRpc: Message {
    /// The method's name in the service.
    const METHOD: &'static str;
    /// What the shim answers.
    type Response: Message;
    /// A long poll (`Wait`, which lasts until a process exits): bounded by its caller's
    /// timeout alone, it takes no call slot and its timeout is no strike against the shim.
    const LONG_POLL: bool = false;
}

/// `"Method": Request -> Response;` rows, each an impl of [`TaskRpc`].
macro_rules! task_rpcs {
    ($($method:literal: $request:ident -> $response:ty $(, long poll $long:literal)?;)*) => {$(
        impl TaskRpc for pb::$request {
            const METHOD: &'static str = $method;
            type Response = $response;
            $(const LONG_POLL: bool = $long;)?
        }
    )*};
}

task_rpcs! {
    "Create": CreateTaskRequest -> pb::CreateTaskResponse;
    "Start": StartRequest -> pb::StartResponse;
    "Delete": DeleteRequest -> pb::DeleteResponse;
    "Exec": ExecProcessRequest -> Empty;
    "ResizePty": ResizePtyRequest -> Empty;
    "CloseIO": CloseIORequest -> Empty;
    "State": StateRequest -> pb::StateResponse;
    "Kill": KillRequest -> Empty;
    "Wait": WaitRequest -> pb::WaitResponse, long poll true;
    "Connect": ConnectRequest -> pb::ConnectResponse;
    "Shutdown": ShutdownRequest -> Empty;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are containerd's (api/runtime/task/v2/shim.proto), and only Wait is a long
    /// poll.
    #[test]
    fn methods_and_long_polls() {
        fn row<R: TaskRpc>() -> (&'static str, bool) {
            (R::METHOD, R::LONG_POLL)
        }
        let rows = [
            row::<pb::CreateTaskRequest>(),
            row::<pb::StartRequest>(),
            row::<pb::DeleteRequest>(),
            row::<pb::ExecProcessRequest>(),
            row::<pb::ResizePtyRequest>(),
            row::<pb::CloseIORequest>(),
            row::<pb::StateRequest>(),
            row::<pb::KillRequest>(),
            row::<pb::WaitRequest>(),
            row::<pb::ConnectRequest>(),
            row::<pb::ShutdownRequest>(),
        ];
        let want = [
            "Create",
            "Start",
            "Delete",
            "Exec",
            "ResizePty",
            "CloseIO",
            "State",
            "Kill",
            "Wait",
            "Connect",
            "Shutdown",
        ];
        assert_eq!(rows.map(|r| r.0), want);
        assert_eq!(
            rows.iter().filter(|r| r.1).map(|r| r.0).collect::<Vec<_>>(),
            ["Wait"]
        );
    }
}
