/**
 * Our PostGraphile plugins, each small:
 * - LoginPlugin: `login` as a custom mutation. app_public.login() records failed attempts and
 *   returns NULL on any failure (it cannot raise, or the attempt counter would roll back), so here
 *   NULL becomes the documented error 28P01. The SQL function itself is hidden from the schema.
 * - RequestLimitsPlugin: depth limit and page-size cap on every operation; introspection off in production.
 */
import { depthLimit } from "@graphile/depth-limit";
import { withPgClientTransaction } from "postgraphile/@dataplan/pg";
import { lambda, object, SafeError, UnbatchedStep, type Step, type UnbatchedExecutionExtra } from "postgraphile/grafast";
import { httpError } from "postgraphile/grafserv";
import { Kind, NoSchemaIntrospectionCustomRule, parse, type DocumentNode, visit } from "postgraphile/graphql";
import { extendSchema, gql } from "postgraphile/utils";

/**
 * A JWT record produced in TypeScript. PostGraphile's JwtToken scalar plans its value with
 * `$step.record()` (it normally receives a row from a SQL function); this step passes the
 * record through and offers that method, so the token is signed by the same code as register().
 */
class JwtRecordStep extends UnbatchedStep<Record<string, unknown>> {
  static override $$export = { moduleName: "switchboard", exportName: "JwtRecordStep" };
  override isSyncAndSafe = true;
  constructor($record: Step<Record<string, unknown>>) {
    super();
    this.addDependency($record);
  }
  record(): this {
    return this;
  }
  unbatchedExecute(_extra: UnbatchedExecutionExtra, record: Record<string, unknown>): Record<string, unknown> {
    return record;
  }
}

export const LoginPlugin = extendSchema((build) => {
  const executor = build.input.pgRegistry.pgExecutors.main!;
  return {
    typeDefs: gql`
      input LoginInput {
        "The email address you registered with."
        email: String!
        "Your password."
        password: String!
      }
      type LoginPayload {
        "A signed token: send it as 'Authorization: Bearer <token>'. It names your user, current tenant and session."
        result: JwtToken!
      }
      extend type Mutation {
        """
        Log in with email and password. Wrong password, unknown email and a locked account give the same
        error (code 28P01); after 5 failures in 15 minutes the account is locked for 15 minutes.
        """
        login(input: LoginInput!): LoginPayload
      }
    `,
    plans: {
      Mutation: {
        login(_: unknown, fieldArgs: { getRaw(path: string): Step }) {
          const $input = fieldArgs.getRaw("input");
          // The transaction must commit even when login fails: it holds the failed-attempt count.
          const $token = withPgClientTransaction(executor, $input, async (client, input) => {
            const { email, password } = input as { email: string; password: string };
            const { rows } = await client.query<{ token: Record<string, unknown> | null }>({
              text: "select case when t is null then null else row_to_json(t) end as token from app_public.login($1, $2) t",
              values: [email, password],
            });
            return rows[0]?.token ?? null;
          });
          // Only after the commit does a NULL become the client's error.
          const $checked = lambda($token, (token) => {
            if (!token) throw new SafeError("Incorrect email or password.", { code: "28P01" });
            return token;
          });
          return object({ token: $checked });
        },
      },
      LoginPayload: {
        result($payload: { get(key: string): Step<Record<string, unknown>> }) {
          return new JwtRecordStep($payload.get("token"));
        },
      },
    },
  };
});

/** Finds `first`/`last` arguments above the cap, as literals or through variables. */
export function pageSizeViolation(document: DocumentNode, variables: Record<string, unknown> | undefined, max: number): string | null {
  let problem: string | null = null;
  visit(document, {
    Argument(node) {
      if (problem || (node.name.value !== "first" && node.name.value !== "last")) return;
      let value: unknown = null;
      if (node.value.kind === Kind.INT) value = Number(node.value.value);
      else if (node.value.kind === Kind.VARIABLE) value = variables?.[node.value.name.value];
      if (typeof value === "number" && value > max) {
        problem = `'${node.name.value}: ${value}' is more than the ${max} rows a page may hold; page through the results instead.`;
      }
    },
  });
  return problem;
}

export function makeRequestLimitsPlugin(options: { depthLimit: number; maxPageSize: number; production: boolean }): GraphileConfig.Plugin {
  const parseCache = new Map<string, DocumentNode>();
  return {
    name: "SwitchboardRequestLimitsPlugin",
    version: "1.0.0",
    grafserv: {
      middleware: {
        setPreset(next, event) {
          event.validationRules.push(depthLimit({ maxDepth: options.depthLimit, maxListDepth: 6, maxSelfReferentialDepth: 3 }));
          if (options.production) event.validationRules.push(NoSchemaIntrospectionCustomRule);
          return next();
        },
        processGraphQLRequestBody(next, event) {
          const { query, variableValues } = event.body as { query?: unknown; variableValues?: Record<string, unknown> };
          if (typeof query === "string") {
            let document = parseCache.get(query);
            if (!document) {
              try {
                document = parse(query);
              } catch {
                return next(); // grafserv reports the syntax error itself
              }
              if (parseCache.size > 500) parseCache.clear();
              parseCache.set(query, document);
            }
            const problem = pageSizeViolation(document, variableValues ?? undefined, options.maxPageSize);
            if (problem) throw httpError(400, problem);
          }
          return next();
        },
      },
    },
  };
}
