/* test_contract: proto/contract.h lists exactly the methods of proto/gyro_services.proto (the
 * file protoc-c does not compile), each with the path gRPC gives it ("/gyro.SERVICE/METHOD"),
 * in the file's order, so that a method added to one and not the other fails here. */
#include <stdio.h>
#include <string.h>

#include "proto/contract.h"
#include "tests/test.h"

typedef struct {
  const char *service, *method, *path;
} method_t;

static const method_t listed[] = {
#define GY_METHOD_ROW(name, service, method, path) {service, method, path},
    GY_METHOD_MAP(GY_METHOD_ROW)
#undef GY_METHOD_ROW
};
#define NLISTED (sizeof(listed) / sizeof(listed[0]))

int main(void) {
  const char *src = getenv("GY_SOURCE_DIR");
  REQUIRE(src);
  char path[1024], line[512], service[64] = "";
  snprintf(path, sizeof(path), "%s/proto/gyro_services.proto", src);
  FILE *f = fopen(path, "r");
  REQUIRE(f);
  size_t k = 0;
  while (fgets(line, sizeof(line), f)) {
    char name[64];
    if (sscanf(line, " service %63[A-Za-z0-9_]", name) == 1) {
      snprintf(service, sizeof(service), "%s", name);
      continue;
    }
    if (sscanf(line, " rpc %63[A-Za-z0-9_](", name) != 1) continue;
    CHECK_MSG(service[0], "rpc %s outside a service", name);
    CHECK_MSG(k < NLISTED, "gyro_services.proto has %s.%s, proto/contract.h does not", service,
              name);
    if (k >= NLISTED) continue;
    char want[160];
    snprintf(want, sizeof(want), "/gyro.%s/%s", service, name);
    CHECK_MSG(!strcmp(listed[k].service, service) && !strcmp(listed[k].method, name),
              "method %zu: the .proto says %s.%s, contract.h %s.%s", k, service, name,
              listed[k].service, listed[k].method);
    CHECK_MSG(!strcmp(listed[k].path, want), "%s: path %s, want %s", name, listed[k].path, want);
    k++;
  }
  fclose(f);
  CHECK_MSG(k == NLISTED, "contract.h lists %zu methods, gyro_services.proto %zu", NLISTED, k);
  /* the named paths are the listed ones */
  CHECK(!strcmp(GY_METHOD_WORKER_JOIN, listed[0].path));
  CHECK(!strcmp(GY_METHOD_WORKER_SESSION, listed[1].path));
  CHECK(!strcmp(GY_METHOD_WORKER_STORE_SET, listed[2].path));
  CHECK(!strcmp(GY_METHOD_WORKER_STORE_GET, listed[3].path));
  CHECK(!strcmp(GY_METHOD_OPERATOR_STATUS, listed[4].path));
  CHECK(!strcmp(GY_METHOD_OPERATOR_COMMAND, listed[5].path));
  CHECK(!strcmp(GY_METHOD_OPERATOR_WATCH, listed[6].path));
  CHECK(!strcmp(GY_METHOD_OPERATOR_EVENTS, listed[7].path));
  CHECK(!strcmp(GY_METHOD_OPERATOR_POLICY_SHOW, listed[8].path));
  CHECK(!strcmp(GY_METHOD_OPERATOR_POLICY_SET, listed[9].path));
  CHECK(!strcmp(GY_METHOD_OPERATOR_CHECKPOINTS, listed[10].path));
  CHECK(!strcmp(GY_METHOD_OPERATOR_QUARANTINE, listed[11].path));
  GY_TEST_END();
}
