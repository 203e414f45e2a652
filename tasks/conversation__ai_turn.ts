/**
 * conversation__ai_turn — one AI answer in a conversation the AI has (job key ai_turn:<id>, so texts
 * arriving together get one answer). Reads the context from SQL, asks the configured responder
 * (AI_PROVIDER; when an external provider fails, the local deterministic one answers instead so the
 * customer is never left waiting), and records the reply with app_private.record_ai_reply, which is
 * idempotent per answered message and stays quiet if a person took over in the meantime.
 */
import type { Task } from "graphile-worker";
import { LocalAiResponder } from "../src/providers/aiLocal.ts";
import type { AiContext, AiReply, ConversationTurn, LeadFacts } from "../src/providers/ai.ts";
import { services } from "../src/worker/services.ts";
import { uuidFromPayload } from "../src/worker/taskPayload.ts";

interface TurnContext {
  active: boolean;
  business_name: string;
  trade_type: string | null;
  greeting_template: string;
  reply_to_message_id: string | null;
  turns: ConversationTurn[];
  known: LeadFacts;
}

const task: Task = async (payload, helpers) => {
  const conversationId = uuidFromPayload(payload, "conversation_id", "conversation__ai_turn");
  const { rows } = await helpers.withPgClient((client) =>
    client.query<{ context: TurnContext | null }>("select app_private.ai_turn_context($1::uuid) as context", [conversationId]),
  );
  const context = rows[0]?.context;
  if (!context || !context.active || !context.reply_to_message_id) {
    helpers.logger.info(`conversation ${conversationId}: the AI has nothing to answer`);
    return;
  }
  const input: AiContext = {
    businessName: context.business_name,
    tradeType: context.trade_type,
    greetingTemplate: context.greeting_template,
    turns: context.turns,
    known: context.known,
  };
  const responder = services().ai;
  let reply: AiReply;
  try {
    reply = await responder.reply(input);
  } catch (error) {
    if (responder.name === "local") throw error;
    helpers.logger.warn(`AI provider ${responder.name} failed (${(error as Error).message}); the local responder answers instead`);
    reply = await new LocalAiResponder().reply(input);
  }
  await helpers.withPgClient((client) =>
    client.query("select app_private.record_ai_reply($1, $2, $3, $4, $5, $6)", [
      conversationId,
      context.reply_to_message_id,
      reply.body,
      reply.intent,
      reply.confidence,
      JSON.stringify(reply.facts),
    ]),
  );
};

export default task;
