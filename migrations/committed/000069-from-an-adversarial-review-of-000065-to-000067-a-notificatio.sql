--! Previous: sha1:8b0cdbe611dfb3c289846050eba380965e1ccdb9
--! Hash: sha1:f8eddacee6c4b6c512aa5460caa493ba28edc7b6
--! Message: From an adversarial review of 000065 to 000067: a notification never goes to a number that is a live lead's or a customer's in an open conversation (a member types their own profile phone); a lead set to dnc turns an opt-out entry of its number into its own, and START or YES lifts nothing while a live lead has the status dnc; members can no longer choose the source of a do-not-contact entry (it is manual); the reply window counts inbound calls only

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
  -- A member types their profile phone themselves: a number that is a live lead's, or a customer's in a
  -- conversation, is a customer's whatever a profile says.
  if NEW.purpose = 'notification'
     and (NEW.lead_id is not null
          or not exists (select 1 from app_public.user_profiles p
                          where p.tenant_id = NEW.tenant_id and p.phone_number = NEW.to_phone)
          or exists (select 1 from app_public.leads l
                      where l.tenant_id = NEW.tenant_id and l.phone = NEW.to_phone and l.deleted_at is null)
          or exists (select 1 from app_public.conversations c
                      where c.tenant_id = NEW.tenant_id and c.customer_phone = NEW.to_phone and c.status = 'active')) then
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

comment on function app_private.tg_messages__guard_outbound() is $$Trigger (_200_guard_outbound, before insert of outbound messages). THE RULE of is_on_dnc_list, enforced where every text is written: a number on the do-not-contact list gets nothing (SQLSTATE SB001), except the one opt-out confirmation and HELP replies, which the carriers require; marketing and nurture texts also get SB001 while the number is held after an unclear opt-out (app_private.sms_marketing_held). No bypass of sending hours (22023 otherwise): a notification goes only to the profile phone of a member of the business, never to a number that is a live lead's or a customer's in an open conversation; a conversation reply or missed-call auto-response only to the customer of a conversation they started (app_private.sms_customer_contact_at). Marketing and nurture texts, and replies sent more than app_private.sms_reply_window() (24 hours) after the customer's last call or text, are moved (scheduled_for) to sms_marketing_send_time: legal sending hours of the recipient and the per-state daily cap. Replies within that window go at once. Concurrent queuing to one recipient is serialized by an advisory lock.$$;
--! EndIncluded messaging/tg_messages__guard_outbound.sql
--! Included crm/tg_leads__add_to_dnc_list.sql
create or replace function app_private.tg_leads__add_to_dnc_list() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if NEW.status <> 'dnc' or NEW.phone is null then
    return null;
  end if;
  if TG_OP = 'UPDATE' and OLD.status = 'dnc' then
    return null;
  end if;
  -- A person's block outranks the customer's own opt-out: an entry the customer's STOP (or the provider)
  -- put there becomes this one, so that a later START or YES cannot lift what the business decided.
  insert into app_public.dnc_list as d (tenant_id, phone, reason, source, added_by_user_id)
  values (NEW.tenant_id, NEW.phone, pg_catalog.format('The lead''s status was set to dnc (lead %s)', NEW.id), 'lead_status',
    app_public.current_user_id())
  on conflict (tenant_id, phone) do update
    set source = excluded.source, reason = excluded.reason, added_by_user_id = excluded.added_by_user_id
    where d.source in ('sms_opt_out', 'provider');
  return null;
end;
$$;

comment on function app_private.tg_leads__add_to_dnc_list() is 'Trigger (_540_add_to_dnc_list, after insert or update of status on leads): when a lead''s status becomes dnc, adds its phone to the tenant''s do-not-contact list (source lead_status; nothing when the lead has no phone). An entry the customer''s own opt-out put there (sms_opt_out, provider) becomes lead_status, so that their START or YES cannot lift the business''s block; other entries stay as they are.';
--! EndIncluded crm/tg_leads__add_to_dnc_list.sql
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
  -- Nor while a live lead with that number has the status dnc (a person set it).
  delete from app_public.dnc_list d
  where d.tenant_id = record_opt_in.tenant_id and d.phone = record_opt_in.customer_phone and d.source in ('sms_opt_out', 'provider')
    and not exists (select 1 from app_public.leads l
                     where l.tenant_id = record_opt_in.tenant_id and l.phone = record_opt_in.customer_phone
                       and l.status = 'dnc' and l.deleted_at is null);
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

comment on function app_private.record_opt_in(uuid, text, text, text, uuid, text) is $$Records that a number that opted out by text (or whose opt-out the provider reported) opted in again: START, UNSTOP or YES read in its text (source sms_keyword), or Twilio's OptOutType START (source provider). Removes only dnc_list entries of source sms_opt_out or provider (a block a person set stays, and so does the entry while a live lead with the number has the status dnc), records the consent event, and queues our confirmation when we read the keyword (the provider confirms its own). Returns false, and changes nothing, when the number had no such entry. Errors: 22023 an unknown source.$$;
--! EndIncluded messaging/record_opt_in.sql
--! Included messaging/sms_customer_contact_at.sql
create or replace function app_private.sms_customer_contact_at(tenant_id uuid, conversation_id uuid, to_phone text)
  returns timestamptz
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  -- The latest of: their last text in it, when they started it (a call, or a first text, which also
  -- sets their last text), and their last call to its business number (a repeat call reuses the
  -- active conversation without touching it).
  select greatest(coalesce(c.last_customer_message_time, c.created_at),
                  (select pg_catalog.max(k.start_time) from app_public.calls k
                    where k.tenant_id = c.tenant_id and k.customer_phone = c.customer_phone
                      and k.business_phone = c.business_phone and k.direction = 'inbound'))
    from app_public.conversations c
   where c.tenant_id = sms_customer_contact_at.tenant_id
     and c.id = sms_customer_contact_at.conversation_id
     and c.customer_phone = sms_customer_contact_at.to_phone
     and c.started_by = 'customer';
$$;

comment on function app_private.sms_customer_contact_at(uuid, uuid, text) is $$The last time the customer reached the business in this conversation (their last text in it, its start by their call or text, or their last call to its business number), when the conversation is one the customer started, with this phone, in this tenant; null otherwise. A reply (purpose conversation or auto_response) goes at once only within app_private.sms_reply_window() of that moment; later it is held to legal sending hours and caps like marketing; without such a conversation it is refused (tg_messages__guard_outbound).$$;
--! EndIncluded messaging/sms_customer_contact_at.sql

-- The source of an entry says who put it there: a member's is manual (it was theirs to choose, so an
-- entry could claim to be the customer's opt-out, which the customer's START then lifted).
revoke insert (source) on app_public.dnc_list from :DATABASE_VISITOR;
