/**
 * Request limits for /graphql, each refused as cheaply as possible with a documented code
 * (README, "Errors"):
 * - the HTTP body (server.ts reads it with express.json before grafserv): REQUEST_TOO_LARGE, HTTP 413;
 * - the query text, in bytes and in lexical tokens, before it is parsed (so nothing oversized ever
 *   reaches grafserv's parse-and-validate cache): QUERY_TOO_LARGE, TOO_MANY_TOKENS;
 * - aliases and root fields, as a validation rule (runs once per document; the result is cached):
 *   TOO_MANY_ALIASES, TOO_MANY_ROOT_FIELDS;
 * - page sizes and cost, before execution, with the request's variables and their defaults:
 *   PAGE_TOO_LARGE, QUERY_TOO_COSTLY.
 * The cost of an operation is the number of field values it can produce: every field counts the rows
 * it is repeated for, and a paginated field (one with a `first` argument) multiplies its selection by
 * its page size (`first`, else `last`, else the default page size that PaginationDefaultsPlugin applies).
 * The walk stops as soon as the cost passes the limit, so a fragment bomb costs at most `maxCost` steps.
 */
import express, { type NextFunction, type Request, type RequestHandler, type Response } from "express";
import type { IncomingMessage } from "node:http";
import { SafeError } from "postgraphile/grafast";
import {
  GraphQLError,
  Kind,
  Lexer,
  Source,
  TokenKind,
  getNamedType,
  parse,
  isInterfaceType,
  isObjectType,
  type ASTVisitor,
  type DocumentNode,
  type FragmentDefinitionNode,
  type GraphQLNamedType,
  type GraphQLSchema,
  type OperationDefinitionNode,
  type SelectionSetNode,
  type ValidationContext,
  type ValidationRule,
  type ValueNode,
} from "postgraphile/graphql";

export interface RequestLimits {
  /** GRAPHQL_MAX_BODY_BYTES: every /graphql body, and the query text of any request. */
  maxBodyBytes: number;
  maxTokens: number;
  maxAliases: number;
  maxRootFields: number;
  maxCost: number;
  defaultPageSize: number;
  maxPageSize: number;
}

export type LimitCode =
  | "REQUEST_TOO_LARGE"
  | "QUERY_TOO_LARGE"
  | "TOO_MANY_TOKENS"
  | "TOO_MANY_ALIASES"
  | "TOO_MANY_ROOT_FIELDS"
  | "PAGE_TOO_LARGE"
  | "QUERY_TOO_COSTLY";

/** For refusals before parsing: grafserv answers a SafeError with its statusCode and extensions. */
export function limitSafeError(message: string, code: LimitCode, statusCode = 400): SafeError {
  return new SafeError(message, { code, statusCode });
}

export function limitGraphQLError(message: string, code: LimitCode): GraphQLError {
  return new GraphQLError(message, { extensions: { code } });
}

/**
 * Checks the query text before anything parses it: its size, then its token count with graphql's
 * own lexer (no AST is built; lexing stops at the first token over the limit). A text the lexer
 * cannot read is left to grafserv, which reports the syntax error.
 */
export function checkQueryText(query: string, limits: RequestLimits): SafeError | null {
  // UTF-8 takes at most 3 bytes per UTF-16 unit, so only long texts need the exact count.
  if (query.length * 3 > limits.maxBodyBytes && Buffer.byteLength(query, "utf8") > limits.maxBodyBytes) {
    return limitSafeError(`The query is larger than ${limits.maxBodyBytes} bytes.`, "QUERY_TOO_LARGE", 413);
  }
  const lexer = new Lexer(new Source(query));
  let tokens = 0;
  try {
    while (lexer.advance().kind !== TokenKind.EOF) {
      if (++tokens > limits.maxTokens) {
        return limitSafeError(`The query has more than ${limits.maxTokens} tokens.`, "TOO_MANY_TOKENS");
      }
    }
  } catch {
    return null;
  }
  return null;
}

/** Aliases in the whole document and fields at the root of each operation (fragments included). */
/**
 * A validation rule whose errors carry `extensions.code` (a library rule such as @graphile/depth-limit
 * reports plain GraphQLErrors): the rule runs unchanged against a context whose reportError adds it.
 */
export function withErrorCode(rule: ValidationRule, code: string): ValidationRule {
  return (context) =>
    rule(
      new Proxy(context, {
        get(target, property) {
          if (property === "reportError") {
            return (error: GraphQLError) =>
              target.reportError(
                new GraphQLError(error.message, {
                  nodes: error.nodes,
                  source: error.source,
                  positions: error.positions,
                  path: error.path,
                  originalError: error.originalError,
                  extensions: { ...error.extensions, code },
                }),
              );
          }
          const value: unknown = Reflect.get(target, property, target);
          return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
        },
      }),
    );
}

export function aliasesAndRootFieldsRule(limits: RequestLimits) {
  return function SwitchboardAliasesAndRootFields(context: ValidationContext): ASTVisitor {
    return {
      Document(document) {
        let aliases = 0;
        const fragments = new Map<string, FragmentDefinitionNode>();
        for (const definition of document.definitions) {
          if (definition.kind === Kind.FRAGMENT_DEFINITION) fragments.set(definition.name.value, definition);
        }
        const countAliases = (selectionSet: SelectionSetNode): void => {
          for (const selection of selectionSet.selections) {
            if (selection.kind === Kind.FIELD && selection.alias) aliases++;
            if (selection.kind !== Kind.FRAGMENT_SPREAD && selection.selectionSet) countAliases(selection.selectionSet);
          }
        };
        for (const definition of document.definitions) {
          if (definition.kind === Kind.OPERATION_DEFINITION || definition.kind === Kind.FRAGMENT_DEFINITION) {
            countAliases(definition.selectionSet);
          }
        }
        if (aliases > limits.maxAliases) {
          context.reportError(
            new GraphQLError(`The document has ${aliases} aliases; at most ${limits.maxAliases} are allowed.`, { extensions: { code: "TOO_MANY_ALIASES" } }),
          );
        }
        for (const definition of document.definitions) {
          if (definition.kind !== Kind.OPERATION_DEFINITION) continue;
          let rootFields = 0;
          const seen = new Set<string>();
          const countRoot = (selectionSet: SelectionSetNode): void => {
            for (const selection of selectionSet.selections) {
              if (selection.kind === Kind.FIELD) rootFields++;
              else if (selection.kind === Kind.INLINE_FRAGMENT) countRoot(selection.selectionSet);
              else if (!seen.has(selection.name.value)) {
                seen.add(selection.name.value);
                const fragment = fragments.get(selection.name.value);
                if (fragment) countRoot(fragment.selectionSet);
              }
            }
          };
          countRoot(definition.selectionSet);
          if (rootFields > limits.maxRootFields) {
            context.reportError(
              new GraphQLError(`The operation asks for ${rootFields} root fields; at most ${limits.maxRootFields} are allowed.`, {
                nodes: [definition],
                extensions: { code: "TOO_MANY_ROOT_FIELDS" },
              }),
            );
          }
        }
        return false;
      },
    };
  };
}

function intOf(value: ValueNode, variables: Record<string, unknown>, defaults: Map<string, ValueNode>): number | null {
  if (value.kind === Kind.INT) return Number(value.value);
  if (value.kind === Kind.VARIABLE) {
    const name = value.name.value;
    const given = variables[name];
    if (given !== undefined) return typeof given === "number" ? given : null;
    const fallback = defaults.get(name);
    return fallback ? intOf(fallback, variables, defaults) : null;
  }
  return null;
}

/**
 * Page sizes and cost of the operation that is about to run, with its variables (values or
 * defaults). Returns the first problem found, or null. Runs on a validated document.
 */
export function checkOperation(
  schema: GraphQLSchema,
  document: DocumentNode,
  operation: OperationDefinitionNode,
  rawVariables: Record<string, unknown> | null | undefined,
  limits: RequestLimits,
): GraphQLError | null {
  const variables = rawVariables ?? {};
  const defaults = new Map<string, ValueNode>();
  for (const definition of operation.variableDefinitions ?? []) {
    if (definition.defaultValue) defaults.set(definition.variable.name.value, definition.defaultValue);
  }
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const definition of document.definitions) {
    if (definition.kind === Kind.FRAGMENT_DEFINITION) fragments.set(definition.name.value, definition);
  }
  let cost = 0;
  let problem: GraphQLError | null = null;
  const walk = (selectionSet: SelectionSetNode, parentType: GraphQLNamedType | null | undefined, multiplier: number): void => {
    for (const selection of selectionSet.selections) {
      if (problem) return;
      if (selection.kind === Kind.FIELD) {
        cost += multiplier;
        if (cost > limits.maxCost) {
          problem = limitGraphQLError(
            `The operation could return more than ${limits.maxCost} values (counting each field once per row of every page it is in); ask for smaller pages or fewer fields.`,
            "QUERY_TOO_COSTLY",
          );
          return;
        }
        const name = selection.name.value;
        const field = parentType && (isObjectType(parentType) || isInterfaceType(parentType)) ? parentType.getFields()[name] : undefined;
        let pageSize = 1;
        if (field?.args.some((arg) => arg.name === "first")) {
          let first: number | null = null;
          let last: number | null = null;
          for (const argument of selection.arguments ?? []) {
            if (argument.name.value !== "first" && argument.name.value !== "last") continue;
            const value = intOf(argument.value, variables, defaults);
            if (value !== null && value > limits.maxPageSize) {
              problem = limitGraphQLError(
                `'${argument.name.value}: ${value}' is more than the ${limits.maxPageSize} rows a page may hold; page through the results instead.`,
                "PAGE_TOO_LARGE",
              );
              return;
            }
            if (argument.name.value === "first") first = value;
            else last = value;
          }
          pageSize = Math.max(0, first ?? last ?? limits.defaultPageSize);
        }
        if (selection.selectionSet) walk(selection.selectionSet, field ? getNamedType(field.type) : null, multiplier * Math.max(pageSize, 1));
      } else if (selection.kind === Kind.INLINE_FRAGMENT) {
        const type = selection.typeCondition ? schema.getType(selection.typeCondition.name.value) : parentType;
        walk(selection.selectionSet, type, multiplier);
      } else {
        const fragment = fragments.get(selection.name.value);
        if (fragment) walk(fragment.selectionSet, schema.getType(fragment.typeCondition.name.value), multiplier);
      }
    }
  };
  const rootType =
    operation.operation === "query" ? schema.getQueryType() : operation.operation === "mutation" ? schema.getMutationType() : schema.getSubscriptionType();
  walk(operation.selectionSet, rootType, 1);
  return problem;
}

/**
 * Reads JSON bodies of /graphql before grafserv does, with GRAPHQL_MAX_BODY_BYTES as the cap. The one
 * exception is `importLeads`, whose CSV travels in the request: a caller with a verified token (a
 * logged-in user: an API key is only checked later, in SQL) may send up to `maxUploadBytes`, but a
 * body over the normal cap must then be exactly one `importLeads` mutation, otherwise it is refused.
 * A body over its cap is refused from its Content-Length before it is read (body-parser), or as soon
 * as it passes the cap when it is chunked.
 */
export function graphqlBodyParser(maxBodyBytes: number, maxUploadBytes: number, limits: RequestLimits): RequestHandler {
  const verify = (req: IncomingMessage, _res: unknown, buffer: Buffer) => {
    (req as IncomingMessage & { bodyBytes?: number }).bodyBytes = buffer.length;
  };
  const small = express.json({ limit: maxBodyBytes, verify });
  const large = express.json({ limit: maxUploadBytes, verify });
  const refuse = (res: Response, status: number, message: string, code?: LimitCode) =>
    res.status(status).json({ errors: [{ message, ...(code ? { extensions: { code } } : {}) }] });
  return (req: Request, res: Response, next: NextFunction) => {
    // Other content types (application/graphql) are read by grafserv with maxRequestLength, the same cap.
    if (!req.is("application/json")) return next();
    const uploader = Boolean(req.switchboardAuth?.userId);
    (uploader ? large : small)(req, res, (error?: unknown) => {
      if (error) {
        const { type, status } = error as { type?: string; status?: number };
        if (type === "entity.too.large") {
          return refuse(res, 413, `The request body is larger than ${uploader ? maxUploadBytes : maxBodyBytes} bytes.`, "REQUEST_TOO_LARGE");
        }
        return refuse(res, status ?? 400, "The request body could not be read as JSON.");
      }
      const bytes = (req as Request & { bodyBytes?: number }).bodyBytes ?? 0;
      if (bytes > maxBodyBytes && !isImportLeadsOnly(req.body, limits)) {
        return refuse(res, 413, `The request body is larger than ${maxBodyBytes} bytes (only importLeads may send more).`, "REQUEST_TOO_LARGE");
      }
      next();
    });
  };
}

/** A document made of one mutation whose only field is importLeads (the text is checked before it is parsed). */
function isImportLeadsOnly(body: unknown, limits: RequestLimits): boolean {
  const query = (body as { query?: unknown } | null)?.query;
  if (typeof query !== "string" || checkQueryText(query, limits)) return false;
  let document: DocumentNode;
  try {
    document = parse(query, { noLocation: true, maxTokens: limits.maxTokens });
  } catch {
    return false;
  }
  const [operation, ...rest] = document.definitions;
  return (
    rest.length === 0 &&
    operation?.kind === Kind.OPERATION_DEFINITION &&
    operation.operation === "mutation" &&
    operation.selectionSet.selections.length === 1 &&
    operation.selectionSet.selections[0]!.kind === Kind.FIELD &&
    operation.selectionSet.selections[0]!.name.value === "importLeads"
  );
}
