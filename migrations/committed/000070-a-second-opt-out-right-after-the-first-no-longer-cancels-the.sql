--! Previous: sha1:f8eddacee6c4b6c512aa5460caa493ba28edc7b6
--! Hash: sha1:a22a805a4ffea711dc49e841ecf762fc60024ef9
--! Message: A second opt-out right after the first no longer cancels the confirmation the first one queued (record_opt_out canceled every queued text to the number, the confirmation and HELP answers included; seen as a flaky end-to-end test)

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
  -- The confirmation of an earlier opt-out and HELP answers still go (a second STOP right after the
  -- first canceled the confirmation the first one queued).
  update app_public.messages m
  set status = 'canceled', failed_at = now(), error_message = 'Canceled: the recipient opted out'
  where m.tenant_id = record_opt_out.tenant_id and m.to_phone = record_opt_out.customer_phone
    and m.direction = 'outbound' and m.status = 'queued' and m.purpose not in ('opt_out_confirmation', 'help');
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

comment on function app_private.record_opt_out(uuid, text, text, text, uuid, text) is $$Records that a number opted out of this tenant's texts. source sms_keyword: we read an opt-out in the customer's text (keyword is what they wrote, message_id their message); source provider: the SMS provider says so (Twilio’s OptOutType STOP on an incoming text, or error 21610 on a send; keyword names which, message_id is that message). The number joins dnc_list (source sms_opt_out or provider; an existing entry stays as it is), a consent event is recorded either way, every queued text to it is canceled (but the confirmation of an earlier opt-out and HELP answers), its active conversations end (opted_out), and nurture enrollments stop (the dnc_list trigger). Only a new opt-out read in a text gets our one confirmation; the provider confirms its own. Returns whether the number joined the list. Errors: 22023 an unknown source.$$;
--! EndIncluded messaging/record_opt_out.sql
