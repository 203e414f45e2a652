--! Previous: sha1:c1c855d1e84f6c28c64783ae2d88d17e5b8c1070
--! Hash: sha1:c203e05b314cd6cb264480f6ace7afb90deaedc4
--! Message: Issue 17, the AI's not interested holds marketing: a text the AI reads as not interested holds marketing and nurture to the number and gets the one clarifying text, like an unclear opt-out (consent event source ai); one function for that hold, used by both

alter table app_public.sms_consent_events drop constraint if exists sms_consent_events_source_must_be_known;
alter table app_public.sms_consent_events add constraint sms_consent_events_source_must_be_known
  check (source in ('sms_keyword', 'provider', 'ai', 'api', 'import', 'manual'));
comment on column app_public.sms_consent_events.source is 'Where it came from: sms_keyword (the customer’s text), provider (the SMS provider reported it), ai (the AI read the customer’s text as not interested), api, import or manual.';

--! Included messaging/hold_unclear_opt_out.sql
create or replace function app_private.hold_unclear_opt_out(tenant_id uuid, customer_phone text, business_phone text,
    conversation_id uuid, lead_id uuid, said text, message_id uuid, source text) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if app_private.sms_marketing_held(hold_unclear_opt_out.tenant_id, hold_unclear_opt_out.customer_phone) then
    return false;  -- already held, and already asked once
  end if;
  insert into app_public.sms_consent_events (tenant_id, phone, event, source, keyword, message_id)
  values (hold_unclear_opt_out.tenant_id, hold_unclear_opt_out.customer_phone, 'opt_out_unclear', hold_unclear_opt_out.source,
    hold_unclear_opt_out.said, hold_unclear_opt_out.message_id);
  perform app_private.queue_message(hold_unclear_opt_out.tenant_id, hold_unclear_opt_out.customer_phone, hold_unclear_opt_out.business_phone,
    app_hidden.fill_sms_template('[BUSINESS]: do you want to stop getting texts from us? Reply STOP to stop them, or YES to keep getting them.',
      hold_unclear_opt_out.tenant_id),
    'conversation', 'system', hold_unclear_opt_out.conversation_id, hold_unclear_opt_out.lead_id,
    'opt_out_clarification:' || hold_unclear_opt_out.message_id);
  return true;
end;
$$;

comment on function app_private.hold_unclear_opt_out(uuid, text, text, uuid, uuid, text, uuid, text) is $$Holds marketing and nurture to a number whose customer may have asked to stop without a request we can read: an unclear opt-out in their text (source sms_keyword) or a text the AI read as not interested (source ai). Records the consent event opt_out_unclear (app_private.sms_marketing_held is then true) and queues the one clarifying text the rule allows, in the customer’s conversation, with no marketing in it; nothing when the number is already held. Returns whether it held the number now.$$;
--! EndIncluded messaging/hold_unclear_opt_out.sql
--! Included messaging/record_inbound_message.sql
create or replace function app_private.record_inbound_message(message_sid text, from_phone text, to_phone text, body text,
    num_media integer default 0, opt_out_type text default null,
    out message_id uuid, out tenant_id uuid, out keyword text, out duplicate boolean)
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_owner record;
  v_lead record;
  v_conversation record;
  v_conv app_public.conversations;
  v_settings app_public.business_settings;
  v_user uuid;
  v_delay integer;
  v_provider text;
  v_said text;
begin
  if record_inbound_message.message_sid is null or record_inbound_message.message_sid !~ '^(SM|MM)[0-9a-fA-F]{32}$' then
    raise exception 'MessageSid must be SM or MM followed by 32 hexadecimal digits, got %', coalesce(pg_catalog.quote_literal(pg_catalog.left(record_inbound_message.message_sid, 40)), 'nothing')
      using errcode = '22023';
  end if;
  perform app_hidden.require_e164(record_inbound_message.from_phone, 'From');
  perform app_hidden.require_e164(record_inbound_message.to_phone, 'To');
  if record_inbound_message.body is null then
    raise exception 'Body is missing' using errcode = '22023';
  end if;
  if pg_catalog.length(record_inbound_message.body) > 100000 then
    raise exception 'Body is too long: % characters (at most 100000)', pg_catalog.length(record_inbound_message.body) using errcode = '22023';
  end if;
  -- Deliveries of the same MessageSid wait for each other, so only the first one acts.
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('sms-in:' || record_inbound_message.message_sid, 0));
  select m.id, m.tenant_id into message_id, tenant_id from app_public.messages m where m.message_sid = record_inbound_message.message_sid;
  if found then
    duplicate := true;
    return;
  end if;
  duplicate := false;
  select o.* into v_owner from app_private.number_owner(record_inbound_message.to_phone) o;
  if v_owner.tenant_id is null then
    raise exception 'The number % does not belong to any tenant (no active phone number or tracking number)', record_inbound_message.to_phone
      using errcode = 'P0002';
  end if;
  tenant_id := v_owner.tenant_id;
  keyword := app_public.sms_keyword(record_inbound_message.body);
  -- Twilio's OptOutType: its Advanced Opt-Out recognised the text as STOP, START or HELP and answered it
  -- itself. The provider's reading counts even where ours saw nothing (its keywords are configurable,
  -- e.g. ARRET), and then we send no answer of our own. Another value is not one Twilio sends: ignored.
  v_provider := pg_catalog.upper(pg_catalog.btrim(record_inbound_message.opt_out_type));
  keyword := case v_provider when 'STOP' then 'opt_out' when 'START' then 'opt_in' when 'HELP' then 'help' else keyword end;
  if v_provider not in ('STOP', 'START', 'HELP') then
    v_provider := null;
  end if;
  v_said := pg_catalog.upper(pg_catalog.left(pg_catalog.btrim(record_inbound_message.body), 20));

  if keyword = 'opt_out' then
    -- An opt-out starts no conversation and no lead; it joins the conversation that is open, if one is.
    select c.* into v_conv from app_public.conversations c
    where c.tenant_id = v_owner.tenant_id and c.customer_phone = record_inbound_message.from_phone
      and c.business_phone = record_inbound_message.to_phone and c.status = 'active'
    for update;
    insert into app_public.messages (tenant_id, conversation_id, lead_id, direction, sender, purpose, from_phone, to_phone,
      body, message_sid, status, processed, intent, num_media)
    values (v_owner.tenant_id, v_conv.id, v_conv.lead_id, 'inbound', 'customer', 'conversation', record_inbound_message.from_phone,
      record_inbound_message.to_phone, record_inbound_message.body, record_inbound_message.message_sid, 'received', true, 'opt_out',
      coalesce(record_inbound_message.num_media, 0))
    returning id into message_id;
    perform app_private.record_opt_out(v_owner.tenant_id, record_inbound_message.from_phone, record_inbound_message.to_phone,
      v_said, message_id, case when v_provider is null then 'sms_keyword' else 'provider' end);
    return;
  end if;

  select l.* into v_lead from app_private.caller_lead(v_owner.tenant_id, record_inbound_message.from_phone, 'inbound_sms',
    v_owner.agent_id, null, null) l;
  select c.* into v_conversation from app_private.caller_conversation(v_owner.tenant_id, record_inbound_message.from_phone,
    record_inbound_message.to_phone, v_owner.phone_number_id, v_owner.agent_id, null, v_lead.lead_id) c;
  insert into app_public.messages (tenant_id, conversation_id, lead_id, direction, sender, purpose, from_phone, to_phone,
    body, message_sid, status, processed, intent, num_media)
  values (v_owner.tenant_id, v_conversation.conversation_id, v_lead.lead_id, 'inbound', 'customer', 'conversation',
    record_inbound_message.from_phone, record_inbound_message.to_phone, record_inbound_message.body,
    record_inbound_message.message_sid, 'received', true, keyword, coalesce(record_inbound_message.num_media, 0))
  returning id into message_id;

  if keyword = 'help' and v_provider is not null then
    return;  -- the provider answered it
  end if;
  if keyword = 'help' then
    select s.* into v_settings from app_public.business_settings s where s.tenant_id = v_owner.tenant_id;
    perform app_private.queue_message(v_owner.tenant_id, record_inbound_message.from_phone, record_inbound_message.to_phone,
      app_hidden.fill_sms_template(coalesce(v_settings.sms_help_message,
        '[BUSINESS]: reply to this number and we will get back to you. Msg & data rates may apply. Reply STOP to opt out.'), v_owner.tenant_id),
      'help', 'system', v_conversation.conversation_id, v_lead.lead_id, 'help:' || record_inbound_message.message_sid);
    return;
  end if;
  if keyword = 'opt_in' and app_private.record_opt_in(v_owner.tenant_id, record_inbound_message.from_phone,
       record_inbound_message.to_phone, v_said, message_id, case when v_provider is null then 'sms_keyword' else 'provider' end) then
    return;
  end if;
  if v_provider is not null then
    return;  -- a START the provider answered, from a number that had not opted out: nothing more to do
  end if;
  -- YES (or START) answering the clarifying text of an unclear opt-out: marketing may go again.
  if keyword = 'opt_in' and app_private.sms_marketing_held(v_owner.tenant_id, record_inbound_message.from_phone) then
    insert into app_public.sms_consent_events (tenant_id, phone, event, source, keyword, message_id)
    values (v_owner.tenant_id, record_inbound_message.from_phone, 'opt_in', 'sms_keyword', v_said, message_id);
    return;
  end if;
  -- Words of opting out we cannot read as a request: marketing is held (app_private.sms_marketing_held)
  -- and one clarifying text asks, with no marketing in it. The AI does not answer it.
  if keyword = 'unclear' then
    perform app_private.hold_unclear_opt_out(v_owner.tenant_id, record_inbound_message.from_phone, record_inbound_message.to_phone,
      v_conversation.conversation_id, v_lead.lead_id, v_said, message_id, 'sms_keyword');
    return;
  end if;

  -- An ordinary message: the AI answers at once when it has the conversation; else it takes over after the delay.
  select c.* into v_conv from app_public.conversations c where c.id = v_conversation.conversation_id;
  if v_conv.ai_active then
    perform app_private.add_job('conversation__ai_turn', pg_catalog.json_build_object('conversation_id', v_conv.id),
      job_key => 'ai_turn:' || v_conv.id);
  elsif not v_conv.human_active then
    select s.* into v_settings from app_public.business_settings s where s.tenant_id = v_owner.tenant_id;
    if coalesce(v_settings.ai_enabled, true) then
      v_user := app_private.takeover_user_id(v_owner.tenant_id, v_lead.lead_id);
      select p.ai_takeover_delay into v_delay from app_public.user_preferences p where p.user_id = v_user;
      perform app_private.add_job('conversation__ai_takeover', pg_catalog.json_build_object('conversation_id', v_conv.id),
        run_at => now() + pg_catalog.make_interval(secs => coalesce(v_delay, 60)),
        job_key => 'ai_takeover:' || v_conv.id, job_key_mode => 'preserve_run_at');
    end if;
  end if;
end;
$$;

comment on function app_private.record_inbound_message(text, text, text, text, integer, text) is $$The incoming-text webhook, once per MessageSid (repeated or concurrent deliveries wait for the first and change nothing; duplicate is then true). opt_out_type is Twilio’s OptOutType (STOP, START or HELP: its Advanced Opt-Out recognised and answered the text): it decides the keyword even where sms_keyword sees none, the change is recorded with source provider, and we send no answer of our own. STOP and the other opt-out words, or a request built on one ("please stop texting me"; app_public.sms_keyword): record_opt_out. An unclear opt-out ("how do I unsubscribe?"): stored in its conversation, marketing to the number is held (consent event opt_out_unclear) and one clarifying text asks STOP or YES; YES or START then lifts the hold (consent event opt_in). HELP or INFO: the help text of the tenant is queued. START, UNSTOP or YES from a number that opted out: record_opt_in. Any other text: the lead (source inbound_sms) and the active conversation are found or created, the message is stored, and the AI either answers at once (it has the conversation) or is scheduled to take over after the ai_takeover_delay of the person who owns the lead (unless a person already answers, or ai_enabled is off). Errors: 22023 a malformed MessageSid, number, or a body over 100000 characters; P0002 a number of no tenant.$$;
--! EndIncluded messaging/record_inbound_message.sql
--! Included messaging/record_ai_reply.sql
create or replace function app_private.record_ai_reply(conversation_id uuid, reply_to_message_id uuid, body text, intent text,
    confidence numeric, facts jsonb) returns app_public.messages
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_conv app_public.conversations;
  v_message app_public.messages;
  v_facts jsonb := coalesce(record_ai_reply.facts, '{}'::jsonb);
  v_urgency text;
begin
  if pg_catalog.jsonb_typeof(v_facts) <> 'object' then
    raise exception 'facts must be a JSON object' using errcode = '22023';
  end if;
  if record_ai_reply.intent is null or record_ai_reply.intent !~ '^[a-z_]{1,100}$' then
    raise exception 'intent must be a lower-case word such as ask_address' using errcode = '22023';
  end if;
  select c.* into v_conv from app_public.conversations c where c.id = record_ai_reply.conversation_id for update;
  if not found then
    raise exception 'No conversation %', record_ai_reply.conversation_id using errcode = 'P0002';
  end if;
  select m.* into v_message from app_public.messages m
  where m.tenant_id = v_conv.tenant_id and m.idempotency_key = 'ai_reply:' || record_ai_reply.reply_to_message_id;
  if found then
    return v_message;
  end if;
  -- A person answered, the customer opted out, or the conversation ended while the AI was thinking: stay quiet.
  if v_conv.status <> 'active' or not v_conv.ai_active or v_conv.human_active then
    return null;
  end if;

  v_urgency := case when v_facts ->> 'urgency' in ('low', 'normal', 'high', 'emergency') then v_facts ->> 'urgency' end;
  if v_conv.lead_id is not null then
    update app_public.leads l
    set ai_analysis = coalesce(l.ai_analysis, '{}'::jsonb) || pg_catalog.jsonb_strip_nulls(v_facts)
          || pg_catalog.jsonb_build_object('intent', record_ai_reply.intent, 'confidence', record_ai_reply.confidence, 'analyzed_at', now()),
        problem_description = coalesce(l.problem_description, nullif(pg_catalog.left(v_facts ->> 'problem', 2000), '')),
        job_type = coalesce(nullif(pg_catalog.left(v_facts ->> 'jobType', 100), ''), l.job_type),
        urgency = coalesce(v_urgency, l.urgency),
        address = coalesce(l.address, nullif(pg_catalog.left(v_facts ->> 'address', 500), '')),
        first_name = case when l.first_name is null and l.last_name is null
                          then nullif(pg_catalog.split_part(pg_catalog.btrim(v_facts ->> 'customerName'), ' ', 1), '') else l.first_name end,
        last_name = case when l.first_name is null and l.last_name is null
                         then nullif(pg_catalog.btrim(pg_catalog.substr(pg_catalog.btrim(v_facts ->> 'customerName'),
                           pg_catalog.length(pg_catalog.split_part(pg_catalog.btrim(v_facts ->> 'customerName'), ' ', 1)) + 1)), '') else l.last_name end
    where l.tenant_id = v_conv.tenant_id and l.id = v_conv.lead_id;
  end if;
  update app_public.messages m
  set ai_processed = true
  where m.tenant_id = v_conv.tenant_id and m.conversation_id = v_conv.id and m.direction = 'inbound' and not m.ai_processed
    and m.created_at <= (select r.created_at from app_public.messages r where r.id = record_ai_reply.reply_to_message_id);

  v_message := app_private.queue_message(v_conv.tenant_id, v_conv.customer_phone, v_conv.business_phone,
    pg_catalog.left(record_ai_reply.body, 1600), 'conversation', 'ai', v_conv.id, v_conv.lead_id,
    'ai_reply:' || record_ai_reply.reply_to_message_id);
  update app_public.messages m set intent = record_ai_reply.intent, confidence = round(record_ai_reply.confidence, 2)
  where m.id = v_message.id;
  v_message.intent := record_ai_reply.intent;
  v_message.confidence := round(record_ai_reply.confidence, 2);

  if record_ai_reply.intent in ('not_interested', 'wrong_number') then
    update app_public.conversations c
    set outcome = record_ai_reply.intent, status = 'closed', ai_active = false
    where c.id = v_conv.id;
    -- Not interested may be a revocation in the customer's own words: marketing is held until they
    -- answer the one clarifying text (as for an unclear opt-out).
    if record_ai_reply.intent = 'not_interested' then
      perform app_private.hold_unclear_opt_out(v_conv.tenant_id, v_conv.customer_phone, v_conv.business_phone, v_conv.id, v_conv.lead_id,
        'AI: not interested', record_ai_reply.reply_to_message_id, 'ai');
    end if;
  else
    perform app_private.qualify_conversation_lead(v_conv.id);
  end if;
  return v_message;
end;
$$;

comment on function app_private.record_ai_reply(uuid, uuid, text, text, numeric, jsonb) is $$Records one AI turn (conversation__ai_turn) in one transaction: the facts the responder extracted go into the lead (ai_analysis, and problem, job type, urgency, address and name where still empty), the customer messages up to reply_to_message_id are marked answered, the reply is queued with its intent and confidence (idempotent per answered message: a retried job sends nothing twice), and the lead is qualified and routed once it is complete (qualify_conversation_lead). A wrong number or a not interested closes the conversation; not interested also holds marketing to the number until the customer answers one clarifying text (app_private.hold_unclear_opt_out). Returns null, writing nothing, when a person has answered or the conversation ended in the meantime. Errors: 22023 bad facts or intent; P0002 no such conversation.$$;
--! EndIncluded messaging/record_ai_reply.sql
