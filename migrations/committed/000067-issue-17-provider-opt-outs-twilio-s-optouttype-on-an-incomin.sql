--! Previous: sha1:df8a08f12ef6c7b2b0915f5962e3a371d6d532ae
--! Hash: sha1:de7dc8b33c32354135810e016b1dc424be130377
--! Message: Issue 17, provider opt-outs: Twilio's OptOutType on an incoming text (STOP, START, HELP: its Advanced Opt-Out answered it) decides the keyword even where ours saw none, recorded with source provider and without a second answer from us; a send refused with 21610 (at the send, by a status callback or a reconciliation) puts the number on the do-not-contact list with source provider, cancels what is queued and stops nurture

alter table app_public.dnc_list drop constraint if exists dnc_list_source_must_be_known;
alter table app_public.dnc_list add constraint dnc_list_source_must_be_known
  check (source in ('manual', 'lead_status', 'sms_opt_out', 'provider', 'import', 'api', 'system'));
comment on column app_public.dnc_list.source is 'How it got there: manual, lead_status, sms_opt_out (the customer texted an opt-out), provider (the SMS provider reported one: Twilio''s OptOutType STOP or error 21610), import, api or system.';

-- New signatures (a source for record_opt_out/record_opt_in, Twilio's OptOutType for the webhook): the old ones go.
drop function if exists app_private.record_inbound_message(text, text, text, text, integer);
drop function if exists app_private.record_opt_out(uuid, text, text, text, uuid);
drop function if exists app_private.record_opt_in(uuid, text, text, text, uuid);
--! Included messaging/record_opt_out.sql
create or replace function app_private.record_opt_out(tenant_id uuid, customer_phone text, business_phone text, keyword text,
    message_id uuid, source text default 'sms_keyword') returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_new boolean;
  v_settings app_public.business_settings;
begin
  if record_opt_out.source is null or record_opt_out.source not in ('sms_keyword', 'provider') then
    raise exception 'An opt-out comes from the customer''s text (sms_keyword) or from the provider (provider), got %',
      coalesce(pg_catalog.quote_literal(record_opt_out.source), 'nothing') using errcode = '22023';
  end if;
  insert into app_public.dnc_list (tenant_id, phone, reason, source)
  values (record_opt_out.tenant_id, record_opt_out.customer_phone,
    case record_opt_out.source
      when 'provider' then pg_catalog.format('The SMS provider reports that %s opted out (%s)', record_opt_out.customer_phone,
                                               coalesce(record_opt_out.keyword, 'unsubscribed'))
      else pg_catalog.format('Texted %s to %s', coalesce(record_opt_out.keyword, 'an opt-out word'), record_opt_out.business_phone)
    end,
    case record_opt_out.source when 'provider' then 'provider' else 'sms_opt_out' end)
  on conflict on constraint dnc_list_phone_must_be_unique_per_tenant do nothing;
  v_new := found;
  insert into app_public.sms_consent_events (tenant_id, phone, event, source, keyword, message_id)
  values (record_opt_out.tenant_id, record_opt_out.customer_phone, 'opt_out', record_opt_out.source, record_opt_out.keyword,
    record_opt_out.message_id);
  -- Nothing still waiting may go out: queued texts are canceled (a text a worker is handing to the provider
  -- at this instant cannot be called back; claim_outbound_message checks the list again just before sending).
  update app_public.messages m
  set status = 'canceled', failed_at = now(), error_message = 'Canceled: the recipient opted out'
  where m.tenant_id = record_opt_out.tenant_id and m.to_phone = record_opt_out.customer_phone
    and m.direction = 'outbound' and m.status = 'queued';
  update app_public.conversations c
  set status = 'opted_out', outcome = coalesce(c.outcome, 'opted_out'), ai_active = false
  where c.tenant_id = record_opt_out.tenant_id and c.customer_phone = record_opt_out.customer_phone and c.status = 'active';
  -- One confirmation, ours, for an opt-out we read in a text. The provider confirms its own (Twilio's
  -- Advanced Opt-Out answers the keyword; after a 21610 the carrier blocks every text anyway).
  if v_new and record_opt_out.source = 'sms_keyword' then
    select s.* into v_settings from app_public.business_settings s where s.tenant_id = record_opt_out.tenant_id;
    perform app_private.queue_message(record_opt_out.tenant_id, record_opt_out.customer_phone, record_opt_out.business_phone,
      app_hidden.fill_sms_template(coalesce(v_settings.opt_out_confirmation_message,
        '[BUSINESS]: you are unsubscribed and will get no more texts from us. Reply START to subscribe again.'), record_opt_out.tenant_id),
      'opt_out_confirmation', 'system', null, null, 'opt_out_confirmation:' || record_opt_out.message_id);
  end if;
  return v_new;
end;
$$;

comment on function app_private.record_opt_out(uuid, text, text, text, uuid, text) is $$Records that a number opted out of this tenant's texts. source sms_keyword: we read an opt-out in the customer's text (keyword is what they wrote, message_id their message); source provider: the SMS provider says so (Twilio's OptOutType STOP on an incoming text, or error 21610 on a send; keyword names which, message_id is that message). The number joins dnc_list (source sms_opt_out or provider; an existing entry stays as it is), a consent event is recorded either way, every queued text to it is canceled, its active conversations end (opted_out), and nurture enrollments stop (the dnc_list trigger). Only a new opt-out read in a text gets our one confirmation; the provider confirms its own. Returns whether the number joined the list. Errors: 22023 an unknown source.$$;
--! EndIncluded messaging/record_opt_out.sql
--! Included messaging/record_opt_in.sql
create or replace function app_private.record_opt_in(tenant_id uuid, customer_phone text, business_phone text, keyword text,
    message_id uuid, source text default 'sms_keyword') returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_settings app_public.business_settings;
begin
  if record_opt_in.source is null or record_opt_in.source not in ('sms_keyword', 'provider') then
    raise exception 'An opt-in comes from the customer''s text (sms_keyword) or from the provider (provider), got %',
      coalesce(pg_catalog.quote_literal(record_opt_in.source), 'nothing') using errcode = '22023';
  end if;
  -- Only what the customer's own words put there: an opt-out they texted, or one the provider reported.
  -- A block a person of the business set (manual, api, import, lead_status) stays.
  delete from app_public.dnc_list d
  where d.tenant_id = record_opt_in.tenant_id and d.phone = record_opt_in.customer_phone and d.source in ('sms_opt_out', 'provider');
  if not found then
    return false;
  end if;
  insert into app_public.sms_consent_events (tenant_id, phone, event, source, keyword, message_id)
  values (record_opt_in.tenant_id, record_opt_in.customer_phone, 'opt_in', record_opt_in.source, record_opt_in.keyword,
    record_opt_in.message_id);
  if record_opt_in.source = 'sms_keyword' then
    select s.* into v_settings from app_public.business_settings s where s.tenant_id = record_opt_in.tenant_id;
    perform app_private.queue_message(record_opt_in.tenant_id, record_opt_in.customer_phone, record_opt_in.business_phone,
      app_hidden.fill_sms_template(coalesce(v_settings.opt_in_confirmation_message,
        '[BUSINESS]: you are subscribed again. Reply HELP for help, STOP to opt out.'), record_opt_in.tenant_id),
      'opt_in_confirmation', 'system', null, null, 'opt_in_confirmation:' || record_opt_in.message_id);
  end if;
  return true;
end;
$$;

comment on function app_private.record_opt_in(uuid, text, text, text, uuid, text) is $$Records that a number that opted out by text (or whose opt-out the provider reported) opted in again: START, UNSTOP or YES read in its text (source sms_keyword), or Twilio's OptOutType START (source provider). Removes only dnc_list entries of source sms_opt_out or provider (a block a person set stays), records the consent event, and queues our confirmation when we read the keyword (the provider confirms its own). Returns false, and changes nothing, when the number had no such entry. Errors: 22023 an unknown source.$$;
--! EndIncluded messaging/record_opt_in.sql
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

comment on function app_private.record_inbound_message(text, text, text, text, integer, text) is $$The incoming-text webhook, once per MessageSid (repeated or concurrent deliveries wait for the first and change nothing; duplicate is then true). opt_out_type is Twilio's OptOutType (STOP, START or HELP: its Advanced Opt-Out recognised and answered the text): it decides the keyword even where sms_keyword sees none, the change is recorded with source provider, and we send no answer of our own. STOP and the other opt-out words: record_opt_out. HELP or INFO: the help text of the tenant is queued. START, UNSTOP or YES from a number that opted out: record_opt_in. Any other text: the lead (source inbound_sms) and the active conversation are found or created, the message is stored, and the AI either answers at once (it has the conversation) or is scheduled to take over after the ai_takeover_delay of the person who owns the lead (unless a person already answers, or ai_enabled is off). Errors: 22023 a malformed MessageSid, number, or a body over 100000 characters; P0002 a number of no tenant.$$;
--! EndIncluded messaging/record_inbound_message.sql
--! Included nurture/nurture_lead_opted_out.sql
create or replace function app_private.nurture_lead_opted_out(tenant_id uuid, lead_id uuid) returns text
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select case
    when l.status = 'dnc' then 'dnc'
    when l.phone is not null and exists (select 1 from app_public.dnc_list d where d.tenant_id = l.tenant_id and d.phone = l.phone)
      then coalesce((select case when d.source in ('sms_opt_out', 'provider') then 'opted_out' else 'dnc' end from app_public.dnc_list d
                     where d.tenant_id = l.tenant_id and d.phone = l.phone), 'dnc')
    when l.email is not null and app_private.is_email_suppressed(l.tenant_id, l.email::text) then 'unsubscribed'
  end
  from app_public.leads l
  where l.tenant_id = nurture_lead_opted_out.tenant_id and l.id = nurture_lead_opted_out.lead_id
$$;

comment on function app_private.nurture_lead_opted_out(uuid, uuid) is 'Why nurture may no longer reach the lead on any channel: opted_out (the lead texted STOP, or the SMS provider reported its opt-out), dnc (on the do-not-contact list, or status dnc) or unsubscribed (email suppression list); null when it may. An opt-out on one channel ends nurture on both.';
--! EndIncluded nurture/nurture_lead_opted_out.sql
--! Included nurture/tg_dnc_list__nurture_stop.sql
create or replace function app_private.tg_dnc_list__nurture_stop() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_lead uuid;
begin
  for v_lead in select l.id from app_public.leads l where l.tenant_id = NEW.tenant_id and l.phone = NEW.phone loop
    perform app_private.stop_lead_enrollments(NEW.tenant_id, v_lead,
      case when NEW.source in ('sms_opt_out', 'provider') then 'opted_out' else 'dnc' end);
  end loop;
  return null;
end;
$$;

comment on function app_private.tg_dnc_list__nurture_stop() is 'Trigger (_600_nurture_stop, after insert on dnc_list): every enrollment of a lead with that number stops, as opted_out (the lead texted STOP, or the SMS provider reported its opt-out) or dnc (put on the list).';
--! EndIncluded nurture/tg_dnc_list__nurture_stop.sql
--! Included messaging/tg_messages__provider_opt_out.sql
create or replace function app_private.tg_messages__provider_opt_out() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_private.record_opt_out(NEW.tenant_id, NEW.to_phone, NEW.from_phone, 'Twilio error 21610', NEW.id, 'provider');
  return null;
end;
$$;

comment on function app_private.tg_messages__provider_opt_out() is $$Trigger (_700_provider_opt_out, after an outbound text gets error code 21610, however it came: the refused send, a status callback or a reconciliation). Twilio's 21610 means the recipient unsubscribed from our sender at the carrier (they texted STOP to it, maybe before we ever saw it): the number joins dnc_list with source provider and the rest of an opt-out follows (app_private.record_opt_out): queued texts canceled, conversations ended, nurture stopped. No confirmation: the carrier blocks every text to it.$$;
--! EndIncluded messaging/tg_messages__provider_opt_out.sql

drop trigger if exists _700_provider_opt_out on app_public.messages;
create trigger _700_provider_opt_out
  after update of error_code on app_public.messages
  for each row
  when (NEW.direction = 'outbound' and NEW.error_code = 21610 and OLD.error_code is distinct from NEW.error_code)
  execute function app_private.tg_messages__provider_opt_out();
