/** graphile-worker: tasks from tasks/, schedule from crontab; runs as the owner role. */
import { run, type Runner, type Task, type TaskList } from "graphile-worker";
import { resolve } from "node:path";
import type pg from "pg";
import { projectRoot } from "../config.ts";

export interface WorkerOptions {
  /**
   * Run only these tasks (tasks/<name>.ts) and no crontab. For tests sharing one job queue: a worker
   * only picks up jobs of the tasks it knows, so one test file's worker leaves the others' jobs alone,
   * and it schedules nothing (graphile-worker would otherwise read ./crontab by default and enqueue
   * every scheduled task, e.g. a ServiceTitan incremental sync in the middle of a test's full one).
   */
  only?: string[];
}

export async function startWorker(ownerPool: pg.Pool, concurrency: number, options: WorkerOptions = {}): Promise<Runner> {
  const common = { pgPool: ownerPool, concurrency, noHandleSignals: true, pollInterval: 1000 };
  if (options.only) {
    const taskList: TaskList = {};
    for (const name of options.only) {
      const module = (await import(resolve(projectRoot, "tasks", `${name}.ts`))) as { default: Task };
      taskList[name] = module.default;
    }
    // An empty parsedCronItems, not a missing crontabFile: graphile-worker defaults that to ./crontab.
    return run({ ...common, taskList, parsedCronItems: [] });
  }
  return run({ ...common, taskDirectory: resolve(projectRoot, "tasks"), crontabFile: resolve(projectRoot, "crontab") });
}
