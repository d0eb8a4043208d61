/* contract: the parts of the wire contract that protoc-c does not generate — the gRPC method
 * paths of gyro's services (proto/gyro_services.proto, which protoc-c does not compile) and the
 * limits both ends rely on. Every client, server, test helper and benchmark takes them from
 * here; unit/test_contract checks the list against gyro_services.proto. */
#ifndef GY_PROTO_CONTRACT_H
#define GY_PROTO_CONTRACT_H

/* XX(NAME, service, method, path): every method of gyro_services.proto, in its order. */
#define GY_METHOD_MAP(XX)                                                                          \
  XX(WORKER_JOIN, "Worker", "Join", "/gyro.Worker/Join")                                           \
  XX(WORKER_SESSION, "Worker", "Session", "/gyro.Worker/Session")                                  \
  XX(WORKER_STORE_SET, "Worker", "StoreSet", "/gyro.Worker/StoreSet")                              \
  XX(WORKER_STORE_GET, "Worker", "StoreGet", "/gyro.Worker/StoreGet")                              \
  XX(OPERATOR_STATUS, "Operator", "Status", "/gyro.Operator/Status")                               \
  XX(OPERATOR_COMMAND, "Operator", "Command", "/gyro.Operator/Command")                            \
  XX(OPERATOR_WATCH, "Operator", "Watch", "/gyro.Operator/Watch")                                  \
  XX(OPERATOR_EVENTS, "Operator", "Events", "/gyro.Operator/Events")                               \
  XX(OPERATOR_POLICY_SHOW, "Operator", "PolicyShow", "/gyro.Operator/PolicyShow")                  \
  XX(OPERATOR_POLICY_SET, "Operator", "PolicySet", "/gyro.Operator/PolicySet")                     \
  XX(OPERATOR_CHECKPOINTS, "Operator", "Checkpoints", "/gyro.Operator/Checkpoints")                \
  XX(OPERATOR_QUARANTINE, "Operator", "Quarantine", "/gyro.Operator/Quarantine")

#define GY_METHOD_WORKER_JOIN "/gyro.Worker/Join"
#define GY_METHOD_WORKER_SESSION "/gyro.Worker/Session"
#define GY_METHOD_WORKER_STORE_SET "/gyro.Worker/StoreSet"
#define GY_METHOD_WORKER_STORE_GET "/gyro.Worker/StoreGet"
#define GY_METHOD_OPERATOR_STATUS "/gyro.Operator/Status"
#define GY_METHOD_OPERATOR_COMMAND "/gyro.Operator/Command"
#define GY_METHOD_OPERATOR_WATCH "/gyro.Operator/Watch"
#define GY_METHOD_OPERATOR_EVENTS "/gyro.Operator/Events"
#define GY_METHOD_OPERATOR_POLICY_SHOW "/gyro.Operator/PolicyShow"
#define GY_METHOD_OPERATOR_POLICY_SET "/gyro.Operator/PolicySet"
#define GY_METHOD_OPERATOR_CHECKPOINTS "/gyro.Operator/Checkpoints"
#define GY_METHOD_OPERATOR_QUARANTINE "/gyro.Operator/Quarantine"

/* The most worst (and best) samples a StepReport carries per step: a worker reports at most
 * this many, the controller keeps at most this many. */
#define GY_WIRE_TOPK_MAX 64

/* The most masked samples (the guard's) a StepReport lists per step; counts per channel are
 * exact beyond it. */
#define GY_WIRE_MASKED_MAX 64

/* How the details of a session the controller ends because the rank is hung begin: the agent
 * then ends its process (its trainer thread cannot be woken). */
#define GY_WIRE_HUNG_PREFIX "declared hung"

#endif
