/* launch: `gyroctl launch CONFIG`, the whole supervised job on one machine (a controller and
 * `controller.world` CPU workers as child processes). See cli/launch.c. */
#ifndef GY_LAUNCH_H
#define GY_LAUNCH_H

/* Runs `gyroctl launch`: argv[0] is "launch", the rest its arguments. self is gyroctl's own
 * argv[0] (used to find the sibling binaries). Returns the process exit code: 0 the run is done
 * (the controller exited 0), 1 a child failed (controller exit != 0, a worker out of restarts,
 * a child that cannot be started), 2 usage or configuration error, 130/143 stopped by
 * SIGINT/SIGTERM. */
int gy_launch_main(int argc, char **argv, const char *self);

#endif
