/**
 * Our PostGraphile plugins, each small:
 * - makeLoginPlugin: `login` as a custom mutation. app_public.login() records failed attempts and
 *   returns NULL on any failure (it cannot raise, or the record would roll back), so here NULL
 *   becomes the documented error 28P01. The SQL function itself is hidden from the schema. Its guard
 *   allows one login or register per request and rate limits both (src/api/rateLimit.ts).
 * - RequestLimitsPlugin: size, token, depth, alias, root-field, page-size and cost limits on every operation
 *   (src/api/limits.ts), a default page size, introspection off in production.
 */
import { depthLimit } from "@graphile/depth-limit";
import { withPgClientTransaction } from "postgraphile/@dataplan/pg";
import { constant, ConstantStep, context, lambda, list, object, SafeError, UnbatchedStep, type Step, type UnbatchedExecutionExtra } from "postgraphile/grafast";
import {
  getOperationAST,
  Kind,
  NoSchemaIntrospectionCustomRule,
  parse,
  valueFromASTUntyped,
  type DocumentNode,
  type FragmentDefinitionNode,
  type SelectionSetNode,
} from "postgraphile/graphql";
import { extendSchema, gql } from "postgraphile/utils";
import { aliasesAndRootFieldsRule, checkOperation, checkQueryText, withErrorCode, type RequestLimits } from "./limits.ts";
import { clientAddress, rateLimitedError, type AuthFlow, type AuthRateLimiter } from "./rateLimit.ts";

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

/**
 * The rate-limited mutations (src/api/rateLimit.ts): those a stranger calls without a token, and
 * those that check a logged-in user's current password again.
 */
const LIMITED_FIELDS: Record<string, AuthFlow> = {
  login: "login",
  register: "register",
  acceptInvitation: "accept_invitation",
  verifyEmail: "verify_email",
  confirmEmailChange: "verify_email",
  requestPasswordReset: "reset_password",
  resetPassword: "reset_password",
  changePassword: "change_password",
  requestEmailChange: "change_password",
};

/**
 * What an attempt is counted against beside the client address: the email for login and for asking
 * a reset (so nobody floods one mailbox from many addresses), the session for the password checks
 * (so a stolen session can't guess the password from many addresses, and a revoked token, whose
 * signature still verifies, can only use up its own count). The token flows (resetPassword included)
 * count per client address only: their tokens are 256 random bits, and a shared count would let
 * anyone use it up for everybody.
 */
function accountOf(field: LimitedField, sessionId: string | undefined): string | undefined {
  const email = field.input?.email;
  if (field.name === "login" || field.name === "requestPasswordReset") return typeof email === "string" ? email : "";
  if (field.flow === "change_password") return `session:${sessionId ?? ""}`;
  return undefined;
}

const LIMITED_NAMES = Object.keys(LIMITED_FIELDS);

export interface LimitedField {
  /** The mutation's name (not its alias). */
  name: string;
  flow: AuthFlow;
  /** The `input` argument with this request's variables, if it could be read. */
  input: Record<string, unknown> | null;
}

/**
 * The rate-limited root fields an operation would run: aliases, inline fragments and fragment
 * spreads included (login is a Mutation field, so it only appears at the top of a mutation).
 * Null when the operation can't be found (grafserv then reports the document's problem itself).
 */
export function limitedFieldsOf(document: DocumentNode, operationName: string | undefined, variables: Record<string, unknown> | undefined): LimitedField[] | null {
  const operation = getOperationAST(document, operationName);
  if (!operation) return null;
  if (operation.operation !== "mutation") return [];
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const definition of document.definitions) {
    if (definition.kind === Kind.FRAGMENT_DEFINITION) fragments.set(definition.name.value, definition);
  }
  const found: LimitedField[] = [];
  const seen = new Set<string>();
  const walk = (selectionSet: SelectionSetNode): void => {
    for (const selection of selectionSet.selections) {
      if (selection.kind === Kind.FIELD) {
        const flow = LIMITED_FIELDS[selection.name.value];
        if (!flow) continue;
        const inputArg = selection.arguments?.find((arg) => arg.name.value === "input");
        let input: unknown = null;
        try {
          input = inputArg ? valueFromASTUntyped(inputArg.value, variables) : null;
        } catch {
          input = null;
        }
        found.push({ name: selection.name.value, flow, input: input && typeof input === "object" ? (input as Record<string, unknown>) : null });
      } else if (selection.kind === Kind.INLINE_FRAGMENT) {
        walk(selection.selectionSet);
      } else {
        const name = selection.name.value;
        const fragment = fragments.get(name);
        if (!fragment || seen.has(name)) continue;
        seen.add(name);
        walk(fragment.selectionSet);
      }
    }
  }
  walk(operation.selectionSet);
  return found;
}

/**
 * `login` as a custom mutation, with its guard. app_public.login() records failed attempts and
 * returns NULL on any failure (it cannot raise, or its bookkeeping would roll back); here NULL
 * becomes the documented error 28P01. Before anything runs, the grafserv middleware below refuses an
 * operation holding more than one login or register (aliases and fragments included: code
 * LOGIN_REPEATED, nothing counted) and counts the attempt against the limits per client address,
 * per account and per (account, address), refusing with RATE_LIMITED and the seconds to wait. So a
 * refused attempt costs no transaction and no bcrypt hash. grafserv refuses batched (array) bodies.
 */
export function makeLoginPlugin(limiter: AuthRateLimiter, trustProxy: number): GraphileConfig.Plugin {
  const schemaPlugin = extendSchema((build) => {
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
          Log in with email and password. A wrong password and an unknown email give the same error (code 28P01).
          Attempts are rate limited per client address, per account and per account and address: after a few
          failures each further attempt must wait longer (code RATE_LIMITED, with retryAfter in seconds); the
          account is never locked. One login per request.
          """
          login(input: LoginInput!): LoginPayload
        }
      `,
      plans: {
        Mutation: {
          login(_: unknown, fieldArgs: { getRaw(path: string): Step }) {
            const $input = fieldArgs.getRaw("input");
            // The transaction must commit even when login fails: it records the failed attempt.
            const $token = withPgClientTransaction(executor, $input, async (client, input) => {
              const { email, password } = input as { email: string; password: string };
              const { rows } = await client.query<{ token: Record<string, unknown> | null }>({
                text: "select case when t is null then null else row_to_json(t) end as token from app_public.login($1, $2) t",
                values: [email, password],
              });
              return rows[0]?.token ?? null;
            });
            // Only after the commit does a NULL become the client's error; a success forgets this address's waits on the account.
            const $checked = lambda(
              list([$token, $input, context().get("clientAddress")]),
              async ([token, input, address]) => {
                if (!token) throw new SafeError("Incorrect email or password.", { code: "28P01" });
                if (typeof address === "string") {
                  const email = (input as { email?: unknown } | null)?.email;
                  await limiter.succeeded("login", { address, account: typeof email === "string" ? email : "" }).catch((error: unknown) => {
                    console.warn("login: could not reset the rate limit counters", error);
                  });
                }
                return token as Record<string, unknown>;
              },
            );
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
  }, "SwitchboardLoginPlugin");
  return {
    ...schemaPlugin,
    grafserv: {
      middleware: {
        async processGraphQLRequestBody(next, event) {
          const { query, operationName, variableValues } = event.body as {
            query?: unknown;
            operationName?: unknown;
            variableValues?: Record<string, unknown> | null;
          };
          const req = event.request?.requestContext?.expressv4?.req;
          if (typeof query !== "string" || !LIMITED_NAMES.some((name) => query.includes(name))) return next();
          if (event.request && event.request.method !== "POST") return next(); // grafserv refuses mutations over GET
          let document: DocumentNode;
          try {
            document = parse(query);
          } catch {
            return next(); // grafserv reports the syntax error itself
          }
          const fields = limitedFieldsOf(document, typeof operationName === "string" ? operationName : undefined, variableValues ?? undefined);
          if (!fields || fields.length === 0) return next();
          if (fields.length > 1) {
            throw new SafeError(
              `One of ${LIMITED_NAMES.join(", ")} per request: this one holds ${fields.length} (aliases and fragments count). Send each in its own request.`,
              { code: "LOGIN_REPEATED", statusCode: 400 },
            );
          }
          const [field] = fields as [LimitedField];
          const address = req ? clientAddress(req, trustProxy) : null;
          if (!address) throw rateLimitedError(1); // an attempt that can't be counted is not made (the peer is already gone)
          const account = accountOf(field, req?.switchboardAuth?.sessionId);
          await limiter.attempt(field.flow, account === undefined ? { address } : { address, account });
          return next();
        },
      },
    },
  };
}

/**
 * Request limits (src/api/limits.ts): the query text's size and tokens before parsing; a depth limit,
 * aliases and root fields as validation rules; page sizes and cost before execution; a default page
 * size on every paginated field whose `first` and `last` are both omitted (or null), so no connection
 * ever returns a whole table.
 */
export function makeRequestLimitsPlugin(options: RequestLimits & { depthLimit: number; production: boolean }): GraphileConfig.Plugin {
  const isAbsent = ($step: Step | undefined) => !$step || ($step instanceof ConstantStep && $step.data == null);
  const orDefault = (value: unknown) => (value == null ? options.defaultPageSize : value);
  return {
    name: "SwitchboardRequestLimitsPlugin",
    version: "2.0.0",
    after: ["PgFirstLastBeforeAfterArgsPlugin"],
    schema: {
      hooks: {
        GraphQLObjectType_fields_field_args_arg(arg, _build, context) {
          const { argName } = context.scope;
          if ((argName !== "first" && argName !== "last") || typeof arg.applyPlan !== "function") return arg;
          const set = argName === "first" ? "setFirst" : "setLast";
          return {
            ...arg,
            applyPlan(_$parent: Step, $target: any, input: { getRaw(): Step }) {
              $target[set](lambda(input.getRaw(), orDefault, true));
            },
          };
        },
        GraphQLObjectType_fields_field(field) {
          const plan = field.plan;
          if (typeof plan !== "function") return field;
          return {
            ...field,
            plan($parent: Step, fieldArgs: any, info: any) {
              const $result = plan($parent, fieldArgs, info);
              const args: Array<{ name: string }> = info?.field?.args ?? [];
              if (!args.some((a) => a.name === "first") || !$result || typeof ($result as any).setFirst !== "function") return $result;
              const hasLast = args.some((a) => a.name === "last");
              if (isAbsent(fieldArgs.getRaw("first")) && (!hasLast || isAbsent(fieldArgs.getRaw("last")))) {
                ($result as any).setFirst(constant(options.defaultPageSize));
              }
              return $result;
            },
          } as typeof field;
        },
      },
    },
    grafserv: {
      middleware: {
        setPreset(next, event) {
          event.validationRules.push(withErrorCode(depthLimit({ maxDepth: options.depthLimit, maxListDepth: 6, maxSelfReferentialDepth: 3 }), "QUERY_TOO_DEEP"));
          event.validationRules.push(aliasesAndRootFieldsRule(options));
          if (options.production) event.validationRules.push(NoSchemaIntrospectionCustomRule);
          return next();
        },
        processGraphQLRequestBody(next, event) {
          // Before grafserv parses (and caches) the document: an oversized text is never parsed.
          const { query } = event.body as { query?: unknown };
          if (typeof query === "string") {
            const problem = checkQueryText(query, options);
            if (problem) throw problem;
          }
          return next();
        },
      },
    },
    grafast: {
      middleware: {
        execute(next, event) {
          // After validation (cached per document), before any plan or SQL: page sizes and cost with this request's variables.
          const { schema, document, operationName, variableValues } = event.args;
          const operation = getOperationAST(document, operationName ?? undefined);
          if (!operation) return next();
          const problem = checkOperation(schema, document, operation, variableValues as Record<string, unknown> | undefined, options);
          if (problem) return { errors: [problem] };
          return next();
        },
      },
    },
  };
}
