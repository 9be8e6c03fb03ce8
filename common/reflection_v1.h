// Server reflection v1 (grpc.reflection.v1.ServerReflection) next to the
// v1alpha service that Debian's libgrpc++ 1.51 ships: current grpcurl and
// `buf curl` ask for v1 first. Answers from the generated descriptor pool,
// which also holds grpc.health.v1.Health (proto/grpc/health/v1), so both
// reflection versions can describe the health service.
#ifndef LABSHARE_COMMON_REFLECTION_V1_H_
#define LABSHARE_COMMON_REFLECTION_V1_H_

namespace labshare {

// Makes every grpc::ServerBuilder built afterwards serve reflection v1
// (like grpc::reflection::InitProtoReflectionServerBuilderPlugin for v1alpha).
// Idempotent; call before building servers.
void InitReflectionV1ServerBuilderPlugin();

}  // namespace labshare

#endif  // LABSHARE_COMMON_REFLECTION_V1_H_
