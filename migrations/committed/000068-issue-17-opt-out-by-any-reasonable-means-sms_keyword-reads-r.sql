--! Previous: sha1:de7dc8b33c32354135810e016b1dc424be130377
--! Hash: sha1:8b0cdbe611dfb3c289846050eba380965e1ccdb9
--! Message: Issue 17, opt-out by any reasonable means: sms_keyword reads requests built on the opt-out words ("please stop texting me", "unsubscribe me", "take me off your list", "don't text me again"), a keyword said as a sentence of its own, repeated words, full-width letters (NFKC), accents, and Spanish and French keywords and requests, without misreading ordinary sentences; an unclear one holds marketing to the number and gets one clarifying text, which YES or STOP answers

alter table app_public.sms_consent_events drop constraint if exists sms_consent_events_event_must_be_known;
alter table app_public.sms_consent_events add constraint sms_consent_events_event_must_be_known
  check (event in ('opt_out', 'opt_in', 'opt_out_unclear'));
comment on column app_public.sms_consent_events.event is 'opt_out, opt_in, or opt_out_unclear (the customer wrote words of opting out that make no request we can read: marketing to the number is held until they answer the clarifying text with STOP or YES).';

-- Events of one transaction keep their order (the latest decides whether marketing is held).
alter table app_public.sms_consent_events alter column occurred_at set default clock_timestamp();
comment on column app_public.sms_consent_events.occurred_at is 'When it happened: the clock time of the write (clock_timestamp()), so that events recorded in one transaction keep their order.';

--! Included messaging/sms_words.sql
create or replace function app_hidden.sms_words(text text) returns text
  language sql immutable parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  -- 1. NFKC (full-width letters, composed accents), accents folded, apostrophes dropped (don't → dont),
  --    lower case of plain ASCII (so the collation does not matter);
  -- 2. anything but letters becomes a space; courtesy words go; a word said again goes (STOP STOP → stop).
  select pg_catalog.btrim(pg_catalog.regexp_replace(
           pg_catalog.regexp_replace(
             pg_catalog.regexp_replace(
               pg_catalog.regexp_replace(
                 pg_catalog.lower(pg_catalog.translate(pg_catalog.normalize(coalesce(sms_words.text, ''), 'NFKC'),
                   'ÀÁÂÃÄÅàáâãäåÈÉÊËèéêëÌÍÎÏìíîïÒÓÔÕÖòóôõöÙÚÛÜùúûüÑñÇçÝýÿ''’‘`´',
                   'AAAAAAaaaaaaEEEEeeeeIIIIiiiiOOOOOoooooUUUUuuuuNnCcYyy')),
                 '[^a-z]+', ' ', 'g'),
               '\m(please|pls|plz|thanks|thank you|thank u|thx|ty|now|ok|okay|por favor|gracias|merci|svp|sil vous plait|hi|hello|hey|hola|bonjour|just|asap)\M', ' ', 'g'),
             '\s+', ' ', 'g'),
           '\m(\w+)( \1\M)+', '\1', 'g'));
$$;

comment on function app_hidden.sms_words(text) is $$A text reduced to the words that carry its meaning, for app_public.sms_keyword: Unicode NFKC (full-width letters), accents folded (ARRÊT → arret), apostrophes dropped (don't → dont), lower case, every character that is not a letter a space, courtesy words (please, thanks, ok, hi, por favor, merci…) removed, a word repeated in a row said once (STOP STOP → stop), spaces collapsed.$$;
--! EndIncluded messaging/sms_words.sql
--! Included messaging/sms_opt_out_request.sql
create or replace function app_hidden.sms_opt_out_request() returns text
  language sql immutable parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  select '^(' || pg_catalog.array_to_string(array[
    -- stop texting me, can you stop sending these, I want you to stop calling
    '((i )?(want|need|would like|wanna|wish) (you )?to |can you |could you |will you |would you |u )?(stop|quit|cease|end) (texting|txting|messaging|sending|contacting|calling|bothering|spamming|harassing|emailing)( .*)?',
    -- no more texts, stop the messages, end all texts
    '(stop|no more|end|cancel|quit|enough) (all |the |these |your |this |any |all the |all your |with the |with these )?(texts|text messages|text|messages|msgs|sms|marketing|promotions|promos|spam|ads|alerts|notifications)( to me| to this number)?',
    -- unsubscribe me, remove me from your list, take me off the list, delete my number
    '((i )?(want|need|would like|wanna|wish) (you )?to |can you |could you |will you |would you )?(unsubscribe|remove|delete|take) (me|my number|this number)( (off|from|of|out of))?( (the|your|this|my|all|all your|any))?( (list|lists|texts|messages|number|numbers|mailing list|contact list|contacts|database|system))?',
    -- I want to opt out, I would like to unsubscribe, opt me out
    '(i )?((want|need|would like|wanna|wish|d like) to )?(opt out|optout|unsubscribe|be removed|be unsubscribed|stop (receiving|getting) (texts|messages|these|this|them))( (of|from) (this|these|texts|messages|your list))?',
    'opt me out|leave me alone',
    -- dont text me again, never contact me, do not message this number
    '(do not|dont|never|no) (text|message|contact|call|txt|sms|msg) (me|us|this number|my number)( (again|anymore|any more|ever again|ever))?',
    -- Spanish: no me envíes más mensajes, dejen de escribirme, quiero darme de baja, cancelar suscripción
    'no me (envies|envie|envien|mandes|mande|manden|escribas|escriba|escriban|textees)( mas)?( (mensajes|textos|sms))?',
    'dejen? de (enviarme|mandarme|escribirme|textearme)( (mensajes|textos|sms))?',
    '(quiero )?(darme|dame|denme) de baja|cancelar (mi )?(suscripcion|subscripcion)|no quiero (mas )?(mensajes|textos)',
    -- French: arrêtez de menvoyer des messages, ne menvoyez plus de SMS, désabonnez-moi
    '(arretez|arrete|arreter) (de )?(menvoyer|mecrire|me texter)( (des|de))?( (messages|textos|sms|textes))?',
    'ne (menvoyez|menvoie|mecrivez) plus( (de|des))?( (messages|sms|textes))?',
    '(je veux )?me (desabonner|desinscrire)|desabonnez moi|desinscrivez moi'
  ], '|') || ')\Z';
$$;

comment on function app_hidden.sms_opt_out_request() is $$The requests to stop texting that app_public.sms_keyword reads as an opt-out, as one regular expression over the words of a sentence (app_hidden.sms_words): English requests built on stop, quit, cease, end, cancel, unsubscribe, remove, opt out, requests not to text or for no more texts, and their Spanish and French equivalents. Kept apart so that the list reads as data.$$;
--! EndIncluded messaging/sms_opt_out_request.sql
--! Included messaging/sms_keyword.sql
create or replace function app_public.sms_keyword(body text) returns text
  language sql immutable parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  with said as (
    select app_hidden.sms_words(sms_keyword.body) as whole,
           array(select app_hidden.sms_words(s) from pg_catalog.regexp_split_to_table(coalesce(sms_keyword.body, ''), '[.!?;,\n\r]+') s) as sentences
  )
  select case
    -- A revocation by any reasonable means (47 CFR 64.1200(a)(10)): an opt-out word, alone or as a sentence
    -- of its own (Stop. Who is this?), in English, Spanish or French…
    when s.whole in ('stop', 'stopall', 'stop all', 'unsubscribe', 'cancel', 'end', 'quit', 'revoke', 'optout', 'opt out',
                     'alto', 'para', 'parar', 'cancelar', 'baja', 'arret', 'arrete', 'arretez', 'desabonner', 'desinscrire')
      or 'stop' = any (s.sentences) or 'stopall' = any (s.sentences) or 'unsubscribe' = any (s.sentences)
      or 'optout' = any (s.sentences) or 'opt out' = any (s.sentences) or 'revoke' = any (s.sentences)
      -- …or a request built on one: please stop texting me, unsubscribe me, take me off your list,
      -- dont text me again, no more texts, no me envíes más mensajes, ne menvoyez plus de SMS.
      or exists (select 1 from pg_catalog.unnest(s.sentences || s.whole) x where x ~ app_hidden.sms_opt_out_request())
      then 'opt_out'
    when s.whole in ('start', 'unstop', 'yes') then 'opt_in'
    when s.whole in ('help', 'info', 'ayuda', 'aide') then 'help'
    -- Words of opting out that make no request we can read (how do I unsubscribe?, stop with these
    -- texts already or else, stop it alone): marketing waits for the customers answer to one clarifying text.
    when s.whole ~ '\m(unsubscribe|unsubscribed|optout|opt out|revoke|stopall|baja|desabonner|desinscrire)\M'
      or s.whole in ('stop it', 'stop that', 'stop this', 'enough')
      or (s.whole ~ '\m(stop|quit|cease|enough|remove|dont|do not|no more|alto|parar|arret|arretez)\M'
          and s.whole ~ '\m(text|texts|texting|txt|txts|message|messages|messaging|msg|msgs|sms|list|spam|ads|contact|contacting|mensajes|textos)\M')
      then 'unclear'
  end
  from said s;
$$;

comment on function app_public.sms_keyword(body text) is $$What an inbound text means for consent. opt_out: an opt-out word (STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPT OUT; ALTO, PARA, PARAR, CANCELAR, BAJA; ARRÊT, ARRETEZ…) alone or as a sentence of its own, or a request built on one ("Please stop texting me", "unsubscribe me", "take me off your list", "don't text me again", "no more texts", Spanish and French equivalents: app_hidden.sms_opt_out_request). opt_in: START, UNSTOP, YES. help: HELP, INFO, AYUDA, AIDE. unclear: words of opting out without a request we can read ("how do I unsubscribe?"): marketing to the number waits for the answer to one clarifying text. null: an ordinary message ("stop by at 5", "don't stop", "cancel my appointment"). Read after Unicode NFKC, accents, case, punctuation, emoji, courtesy words and repeated words are set aside (app_hidden.sms_words).$$;
grant execute on function app_public.sms_keyword(text) to :DATABASE_VISITOR;
--! EndIncluded messaging/sms_keyword.sql
--! Included messaging/sms_marketing_held.sql
create or replace function app_private.sms_marketing_held(tenant_id uuid, phone text) returns boolean
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select coalesce((select e.event = 'opt_out_unclear'
                     from app_public.sms_consent_events e
                    where e.tenant_id = sms_marketing_held.tenant_id and e.phone = sms_marketing_held.phone
                    order by e.occurred_at desc, e.id desc
                    limit 1), false);
$$;

comment on function app_private.sms_marketing_held(uuid, text) is $$Whether marketing and nurture texts to this number are held: its latest consent event is opt_out_unclear (the customer wrote words of opting out we could not read as a request, and has not answered the clarifying text with STOP or YES since). A number that never answers stays held, as the FCC treats an unanswered clarification as an opt-out.$$;
--! EndIncluded messaging/sms_marketing_held.sql
--! Included messaging/tg_messages__guard_outbound.sql
create or replace function app_private.tg_messages__guard_outbound() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_contact_at timestamptz;
begin
  if NEW.purpose not in ('opt_out_confirmation', 'help')
     and app_public.is_on_dnc_list(NEW.to_phone, NEW.tenant_id) then
    raise exception 'Not sent: % is on the do-not-contact list of this business (it opted out or was blocked), so nothing may be texted to it', NEW.to_phone
      using errcode = 'SB001';
  end if;
  -- Marketing waits while the customer's last word on consent is an unclear opt-out.
  if NEW.purpose in ('marketing', 'nurture') and app_private.sms_marketing_held(NEW.tenant_id, NEW.to_phone) then
    raise exception 'Not sent: the last text from % may have asked us to stop (it was unclear); no marketing goes to it until they answer the clarifying text with STOP or YES', NEW.to_phone
      using errcode = 'SB001';
  end if;
  -- A notification is for the business's own people: the phone of a member's profile, never a lead.
  if NEW.purpose = 'notification'
     and (NEW.lead_id is not null
          or not exists (select 1 from app_public.user_profiles p
                          where p.tenant_id = NEW.tenant_id and p.phone_number = NEW.to_phone)) then
    raise exception 'Not sent: a notification text goes only to a member of this business (the phone of their profile); a text to a lead or customer is marketing, held to legal sending hours and caps'
      using errcode = '22023';
  end if;
  -- A reply belongs to a conversation the customer started, with that customer.
  if NEW.purpose in ('conversation', 'auto_response') then
    v_contact_at := app_private.sms_customer_contact_at(NEW.tenant_id, NEW.conversation_id, NEW.to_phone);
    if v_contact_at is null then
      raise exception 'Not sent: a % text answers a conversation the customer started, to that customer; this one has none (a text that starts a conversation is marketing)',
        pg_catalog.replace(NEW.purpose, '_', ' ') using errcode = '22023';
    end if;
    if NEW.scheduled_for <= v_contact_at + app_private.sms_reply_window() then
      return NEW;
    end if;
    -- Past the reply window it is no longer an answer: held to hours and caps below.
  elsif NEW.purpose not in ('marketing', 'nurture') then
    return NEW;
  end if;
  -- One recipient at a time, so that concurrent queuing cannot pass a daily cap together.
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('sms-cap:' || NEW.tenant_id || ':' || NEW.to_phone, 0));
  NEW.scheduled_for := app_private.sms_marketing_send_time(NEW.tenant_id, NEW.lead_id, NEW.to_phone, NEW.scheduled_for);
  return NEW;
end;
$$;

comment on function app_private.tg_messages__guard_outbound() is $$Trigger (_200_guard_outbound, before insert of outbound messages). THE RULE of is_on_dnc_list, enforced where every text is written: a number on the do-not-contact list gets nothing (SQLSTATE SB001), except the one opt-out confirmation and HELP replies, which the carriers require; marketing and nurture texts also get SB001 while the number is held after an unclear opt-out (app_private.sms_marketing_held). No bypass of sending hours (22023 otherwise): a notification goes only to the profile phone of a member of the business, never to a lead; a conversation reply or missed-call auto-response only to the customer of a conversation they started (app_private.sms_customer_contact_at). Marketing and nurture texts, and replies sent more than app_private.sms_reply_window() (24 hours) after the customer's last call or text, are moved (scheduled_for) to sms_marketing_send_time: legal sending hours of the recipient and the per-state daily cap. Replies within that window go at once. Concurrent queuing to one recipient is serialized by an advisory lock.$$;
--! EndIncluded messaging/tg_messages__guard_outbound.sql
--! Included messaging/claim_outbound_message.sql
create or replace function app_private.claim_outbound_message(message_id uuid) returns app_public.messages
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_message app_public.messages;
  v_window app_public.sms_window;
begin
  select m.* into v_message from app_public.messages m
  where m.id = claim_outbound_message.message_id and m.direction = 'outbound' for update;
  if not found or v_message.status <> 'queued' then
    return null;
  end if;
  if v_message.scheduled_for > app_hidden.clock_now(v_message.tenant_id) + interval '1 second' then
    perform app_private.enqueue_sms_send(v_message.id, v_message.scheduled_for);
    return null;
  end if;
  -- A nurture text goes only while its lead may be nurtured: not after its enrollment stopped, not after
  -- an opt-out on either channel (a row a dead worker left in sending may come back here after that).
  if v_message.nurture_enrollment_id is not null
     and (exists (select 1 from app_public.lead_sequence_enrollments e where e.id = v_message.nurture_enrollment_id and e.status = 'stopped')
          or app_private.nurture_lead_opted_out(v_message.tenant_id, v_message.lead_id) is not null) then
    update app_public.messages m
    set status = 'canceled', failed_at = now(), error_message = 'Canceled: nurture stopped for this lead (checked again before sending)'
    where m.id = v_message.id;
    return null;
  end if;
  -- Consent is checked again at the last moment: the customer may have opted out since queuing.
  if v_message.purpose not in ('opt_out_confirmation', 'help')
     and app_public.is_on_dnc_list(v_message.to_phone, v_message.tenant_id) then
    update app_public.messages m
    set status = 'canceled', failed_at = now(), error_message = 'Canceled: the number is on the do-not-contact list (checked again before sending)'
    where m.id = v_message.id;
    return null;
  end if;
  -- Marketing held since an unclear opt-out of the customer does not go.
  if v_message.purpose in ('marketing', 'nurture') and app_private.sms_marketing_held(v_message.tenant_id, v_message.to_phone) then
    update app_public.messages m
    set status = 'canceled', failed_at = now(), error_message = 'Canceled: the recipient''s last text may have asked us to stop (unclear; checked again before sending)'
    where m.id = v_message.id;
    return null;
  end if;
  -- Held to the recipient's hours: marketing, nurture, and a reply the customer's last call or text no
  -- longer covers (more than app_private.sms_reply_window() ago, or no longer their conversation).
  if v_message.purpose in ('marketing', 'nurture')
     or (v_message.purpose in ('conversation', 'auto_response')
         and coalesce(app_private.sms_customer_contact_at(v_message.tenant_id, v_message.conversation_id, v_message.to_phone)
                        + app_private.sms_reply_window() < app_hidden.clock_now(v_message.tenant_id), true)) then
    v_window := app_hidden.recipient_send_window(v_message.tenant_id, v_message.lead_id, v_message.to_phone, app_hidden.clock_now(v_message.tenant_id));
    if not v_window.allowed then
      update app_public.messages m set scheduled_for = coalesce(v_window.next_allowed_at, app_hidden.clock_now(v_message.tenant_id) + interval '1 hour') where m.id = v_message.id
      returning m.* into v_message;
      perform app_private.enqueue_sms_send(v_message.id, v_message.scheduled_for);
      return null;
    end if;
  end if;
  update app_public.messages m
  set status = 'sending', sending_at = now(), attempts = m.attempts + 1
  where m.id = v_message.id
  returning m.* into v_message;
  return v_message;
end;
$$;

comment on function app_private.claim_outbound_message(uuid) is $$Step 1 of sending (sms__send), committed before the provider is called: a queued message due by the clock of its tenant becomes sending and is returned. Nothing (null) when it is not queued any more, not due yet (its job is moved), its number has joined the do-not-contact list since, or (marketing and nurture) is held after an unclear opt-out, or it is a nurture text whose enrollment stopped or whose lead opted out on either channel (canceled), or a marketing or nurture text, or a reply past the reply window of its customer (app_private.sms_reply_window), is outside the sending hours by now (moved). A message left in sending by a crash is not sent again blindly: sweep_outbox hands it to reconciliation, which asks the provider first.$$;
--! EndIncluded messaging/claim_outbound_message.sql
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
    -- An unclear opt-out holds marketing until the customer answers; nurture ends (an unanswered
    -- clarification counts as an opt-out).
    when l.phone is not null and app_private.sms_marketing_held(l.tenant_id, l.phone) then 'opted_out'
    when l.email is not null and app_private.is_email_suppressed(l.tenant_id, l.email::text) then 'unsubscribed'
  end
  from app_public.leads l
  where l.tenant_id = nurture_lead_opted_out.tenant_id and l.id = nurture_lead_opted_out.lead_id
$$;

comment on function app_private.nurture_lead_opted_out(uuid, uuid) is 'Why nurture may no longer reach the lead on any channel: opted_out (the lead texted STOP, the SMS provider reported its opt-out, or its text was an unclear opt-out it has not clarified), dnc (on the do-not-contact list, or status dnc) or unsubscribed (email suppression list); null when it may. An opt-out on one channel ends nurture on both.';
--! EndIncluded nurture/nurture_lead_opted_out.sql
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
    if not app_private.sms_marketing_held(v_owner.tenant_id, record_inbound_message.from_phone) then
      insert into app_public.sms_consent_events (tenant_id, phone, event, source, keyword, message_id)
      values (v_owner.tenant_id, record_inbound_message.from_phone, 'opt_out_unclear', 'sms_keyword', v_said, message_id);
      perform app_private.queue_message(v_owner.tenant_id, record_inbound_message.from_phone, record_inbound_message.to_phone,
        app_hidden.fill_sms_template('[BUSINESS]: do you want to stop getting texts from us? Reply STOP to stop them, or YES to keep getting them.',
          v_owner.tenant_id),
        'conversation', 'system', v_conversation.conversation_id, v_lead.lead_id, 'opt_out_clarification:' || message_id);
    end if;
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
